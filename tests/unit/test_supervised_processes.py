"""Control-plane components the harness starts again when they die, as a kubelet
restarts static pods; the fault suite kills them through their pid files."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tunegate_cluster.processes import ProcessGroup, wait_until


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers signal 0: look at its state.
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_a_supervised_component_comes_back_after_sigkill_and_stays_down_after_stop(
    tmp_path: Path,
) -> None:
    group = ProcessGroup(log_dir=tmp_path)
    component = group.start("sleeper", ["sleep", "300"], restart=True)
    pid_file = group.pid_file("sleeper")
    first = int(pid_file.read_text())
    assert first == component.proc.pid
    os.kill(first, signal.SIGKILL)
    wait_until(
        lambda: int(pid_file.read_text() or 0) not in (0, first),
        timeout=10,
        what="a new sleeper",
    )
    second = int(pid_file.read_text())
    assert _alive(second) and component.restarts == 1
    group.check_alive()  # a supervised restart is not a failure
    group.stop(grace_seconds=2)
    assert not pid_file.exists()
    wait_until(lambda: not _alive(second), timeout=5, what="the sleeper gone")


def test_an_unsupervised_component_that_dies_is_reported(tmp_path: Path) -> None:
    group = ProcessGroup(log_dir=tmp_path)
    component = group.start("once", ["sleep", "300"])
    os.kill(component.proc.pid, signal.SIGKILL)
    component.proc.wait()
    try:
        group.check_alive()
    except RuntimeError as error:
        assert "once exited" in str(error)
    else:
        raise AssertionError("a dead unsupervised component passed check_alive")
    finally:
        group.stop(grace_seconds=1)
