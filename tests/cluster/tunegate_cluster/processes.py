"""Child processes that never outlive the harness.

Each child gets its own session (so a terminal Ctrl-C reaches only the harness,
which then stops children in order) and a parent-death signal (so even a
SIGKILLed harness leaves no strays).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

_PR_SET_PDEATHSIG = 1


# Loaded once here: the pre-exec hook runs between fork and exec, where loading
# a library could deadlock on a lock another thread held at fork time.
_LIBC = ctypes.CDLL("libc.so.6", use_errno=True)


def _die_with_parent() -> None:
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def spawn(
    argv: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start argv with stdout+stderr appended to log_path."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - one C call, no Python locks
        )


def terminate_group(proc: subprocess.Popen[bytes], *, grace_seconds: float) -> int | None:
    """SIGTERM the child's process group, SIGKILL it after the grace period."""
    if proc.poll() is not None:
        return proc.returncode
    _signal_group(proc, signal.SIGTERM)
    try:
        return proc.wait(timeout=grace_seconds)
    except subprocess.TimeoutExpired:
        _signal_group(proc, signal.SIGKILL)
        return proc.wait(timeout=10)


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


@dataclass
class Component:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    restarts: int = 0
    stopping: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


# As a kubelet restarts a static pod's container: soon, but not in a tight loop.
RESTART_DELAY_SECONDS = 1.0


@dataclass
class ProcessGroup:
    """Components started in order and stopped in reverse order. A component started
    with `restart=True` is started again whenever it exits, as a control plane's static
    pods are; its current pid is kept in `<log_dir>/<name>.pid` for fault injection."""

    log_dir: Path
    components: list[Component] = field(default_factory=list)

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        restart: bool = False,
    ) -> Component:
        log_path = self.log_dir / f"{name}.log"
        component = Component(name, spawn(argv, log_path=log_path, env=env, cwd=cwd), log_path)
        self.components.append(component)
        if restart:
            self._write_pid(component)

            def respawn() -> subprocess.Popen[bytes]:
                return spawn(argv, log_path=log_path, env=env, cwd=cwd)

            threading.Thread(target=self._supervise, args=(component, respawn), daemon=True).start()
        return component

    def pid_file(self, name: str) -> Path:
        return self.log_dir / f"{name}.pid"

    def _write_pid(self, component: Component) -> None:
        self.pid_file(component.name).write_text(f"{component.proc.pid}\n")

    def _supervise(
        self, component: Component, respawn: Callable[[], subprocess.Popen[bytes]]
    ) -> None:
        while True:
            component.proc.wait()
            time.sleep(RESTART_DELAY_SECONDS)
            with component.lock:  # never a new process after stop_last took the old one
                if component.stopping:
                    return
                component.proc = respawn()
                component.restarts += 1
                self._write_pid(component)

    def check_alive(self) -> None:
        for component in self.components:
            code = component.proc.poll()
            if code is not None and not component.stopping:
                if self.pid_file(component.name).exists():
                    continue  # supervised: it is being started again
                raise RuntimeError(
                    f"{component.name} exited with code {code}; "
                    f"last log lines:\n{tail(component.log_path)}"
                )

    def stop(self, *, grace_seconds: float = 10.0) -> None:
        while self.components:
            self.stop_last(grace_seconds=grace_seconds)

    def stop_last(self, *, grace_seconds: float = 10.0) -> None:
        component = self.components.pop()
        with component.lock:
            component.stopping = True
        terminate_group(component.proc, grace_seconds=grace_seconds)
        self.pid_file(component.name).unlink(missing_ok=True)

    def logs_summary(self, *, lines: int = 25) -> str:
        return "\n".join(
            f"===== {c.name} ({c.log_path}) =====\n{tail(c.log_path, lines=lines)}"
            for c in self.components
        )


def tail(path: Path, *, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def wait_until(
    predicate: Callable[[], object],
    *,
    timeout: float,
    what: str | Callable[[], str],
    interval: float = 0.2,
) -> None:
    """Poll a zero-argument callable until it returns truthy; raise naming `what`
    (a callable is evaluated at the timeout, so it can describe the final state)."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception as exc:  # readiness probes fail in many ways while starting
            last_error = exc
        time.sleep(interval)
    description = what() if callable(what) else what
    raise TimeoutError(
        f"timed out after {timeout:.0f}s waiting for {description} (last error: {last_error})"
    )
