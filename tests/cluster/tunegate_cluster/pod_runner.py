"""A tiny kubelet for one node: runs bound pods' commands as local processes.

Level-triggered: every list/watch event reconciles one pod from its current
state, so a restart of the runner converges (pods it was running are lost with
it, as on a node reboot, and reported Failed).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from kubernetes import client, config, watch
from kubernetes.client import ApiException

from tunegate_cluster import pod_status
from tunegate_cluster.pod_env import (
    EnvResolutionError,
    container_argv,
    decode_secret_data,
    resolve_container_env,
    with_local_volumes,
)
from tunegate_cluster.processes import spawn, tail, terminate_group

log = logging.getLogger("pod-runner")
HEARTBEAT_SECONDS = 10
LOG_DIR_ANNOTATION = "tunegate.dev/local-log-dir"
BASE_ENV_KEYS = ("PATH", "LANG", "LC_ALL", "TZ", "SSL_CERT_FILE")
SMP = "application/strategic-merge-patch+json"


class PodExecution(threading.Thread):
    """Runs one pod to completion (or until asked to stop) and reports status."""

    def __init__(self, runner: PodRunner, pod: Mapping[str, Any]) -> None:
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}/{meta['name']}", daemon=True)
        self.runner = runner
        self.pod = pod
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.stop_requested = threading.Event()
        self.grace_seconds = float(pod["spec"].get("terminationGracePeriodSeconds", 30))
        self.pod_dir = runner.state_dir / "pods" / f"{self.namespace}_{self.name}_{meta['uid']}"

    def request_stop(self, grace_seconds: float | None) -> None:
        if grace_seconds is not None:
            self.grace_seconds = grace_seconds
        self.stop_requested.set()

    def run(self) -> None:
        try:
            self._run()
        except Exception:
            log.exception("pod %s/%s: runner error", self.namespace, self.name)
            self.runner.patch_status(
                self.namespace,
                self.name,
                pod_status.terminal_patch([], reason="LocalRunnerError", message="see runner log"),
            )
        finally:
            self.runner.execution_finished(self.pod["metadata"]["uid"])

    def _run(self) -> None:
        spec = self.pod["spec"]
        init_containers = list(spec.get("initContainers") or [])
        containers = list(spec["containers"])
        envs = self._resolve_envs(init_containers + containers)
        if envs is None:
            return
        for sub in ("home", "tmp"):
            (self.pod_dir / sub).mkdir(parents=True, exist_ok=True)
        self.runner.annotate_log_dir(self.namespace, self.name, self.pod_dir)
        restart_policy = spec.get("restartPolicy", "Always")
        # Init containers are retried only on failure, whatever the pod's policy.
        init_policy = "Never" if restart_policy == "Never" else "OnFailure"

        init_exits: list[pod_status.ContainerExit] = []
        for container in init_containers:
            exits = self._run_containers(
                [container], envs, init_policy, init_exits, report_running=False
            )
            init_exits.extend(exits)
            if self.stop_requested.is_set() or exits[0].exit_code != 0:
                self._report_terminal(
                    [self._not_started(c) for c in containers], init_exits, "Init container failed"
                )
                return
        exits = self._run_containers(
            containers, envs, restart_policy, init_exits, report_running=True
        )
        self._report_terminal(exits, init_exits, None)

    def _resolve_envs(self, containers: list[dict[str, Any]]) -> dict[str, dict[str, str]] | None:
        """Like the kubelet, keep the pod Pending and retry while a reference is missing."""
        reported = ""
        while not self.stop_requested.is_set():
            try:
                return {
                    c["name"]: resolve_container_env(
                        self.pod,
                        c,
                        secrets=self.runner.secret_lookup(self.namespace),
                        config_maps=self.runner.config_map_lookup(self.namespace),
                    )
                    for c in containers
                }
            except EnvResolutionError as exc:
                if str(exc) != reported:
                    reported = str(exc)
                    self.runner.patch_status(
                        self.namespace,
                        self.name,
                        pod_status.waiting_patch(
                            self.pod["spec"]["containers"],
                            reason="CreateContainerConfigError",
                            message=reported,
                        ),
                    )
                self.stop_requested.wait(3)
        self._report_terminal([self._not_started(c) for c in containers], [], "Deleted")
        return None

    def _not_started(self, container: Mapping[str, Any]) -> pod_status.ContainerExit:
        stamp = pod_status.now()
        return pod_status.ContainerExit(
            container["name"], container.get("image", ""), 137, stamp, stamp
        )

    def _process_env(self, container_env: Mapping[str, str]) -> dict[str, str]:
        base = {
            k: os.environ[k] for k in (*BASE_ENV_KEYS, *self.runner.pass_env) if k in os.environ
        }
        base |= {
            "HOME": str(self.pod_dir / "home"),
            "TMPDIR": str(self.pod_dir / "tmp"),
            "HOSTNAME": self.pod["spec"].get("hostname") or self.name,
        }
        # Several pods share this machine's few cores; one math thread each keeps
        # concurrent trainers from thrashing (a kubelet would cap them with CPU limits).
        base.setdefault("OMP_NUM_THREADS", "1")
        return base | dict(container_env)

    def _run_containers(
        self,
        containers: list[dict[str, Any]],
        envs: Mapping[str, Mapping[str, str]],
        restart_policy: str,
        init_exits: list[pod_status.ContainerExit],
        *,
        report_running: bool,
    ) -> list[pod_status.ContainerExit]:
        started_at = pod_status.now()
        restarts = {c["name"]: 0 for c in containers}
        procs: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
        exits: dict[str, pod_status.ContainerExit] = {}
        for c in containers:
            procs[c["name"]] = (self._start(c, envs[c["name"]]), pod_status.now())
        if report_running:
            self.runner.patch_status(
                self.namespace,
                self.name,
                pod_status.running_patch(
                    containers,
                    started_at=started_at,
                    restart_counts=restarts,
                    init_exits=init_exits,
                ),
            )
        by_name = {c["name"]: c for c in containers}
        while procs:
            if self.stop_requested.wait(0.5):
                for name, (proc, since) in procs.items():
                    code = terminate_group(proc, grace_seconds=self.grace_seconds)
                    exits[name] = self._exit(by_name[name], code, since, restarts[name])
                break
            for name, (proc, since) in list(procs.items()):
                code = proc.poll()
                if code is None:
                    continue
                del procs[name]
                exit_ = self._exit(by_name[name], code, since, restarts[name])
                if restart_policy == "Always" or (restart_policy == "OnFailure" and code != 0):
                    restarts[name] += 1
                    backoff = min(10.0, 2.0 ** (restarts[name] - 1))
                    if self.stop_requested.wait(backoff):
                        exits[name] = exit_
                        continue
                    procs[name] = (self._start(by_name[name], envs[name]), pod_status.now())
                    self.runner.patch_status(
                        self.namespace,
                        self.name,
                        {
                            "status": {
                                "containerStatuses": [
                                    {
                                        "name": name,
                                        "restartCount": restarts[name],
                                        "lastState": {
                                            "terminated": pod_status.terminated_status(exit_)[
                                                "state"
                                            ]["terminated"]
                                        },
                                    }
                                ]
                            }
                        },
                    )
                else:
                    exits[name] = exit_
        return [exits[c["name"]] for c in containers]

    def _start(
        self, container: Mapping[str, Any], env: Mapping[str, str]
    ) -> subprocess.Popen[bytes]:
        log_path = self.pod_dir / f"{container['name']}.log"
        workdir = Path(container.get("workingDir") or self.pod_dir)
        try:
            argv = container_argv(container, env)
            volumes = str(self.pod_dir / "volumes")
            return spawn(
                argv,
                log_path=log_path,
                env=self._process_env(
                    with_local_volumes(env, container.get("volumeMounts"), volumes)
                ),
                cwd=workdir if workdir.is_dir() else self.pod_dir,
            )
        except (EnvResolutionError, OSError) as exc:
            # Mirror the kubelet: a container that cannot start exits with 128.
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with log_path.open("a") as out:
                out.write(f"local runner could not start container: {exc}\n")
            return subprocess.Popen(["sh", "-c", "exit 128"])

    def _exit(
        self, container: Mapping[str, Any], code: int | None, since: str, restarts: int
    ) -> pod_status.ContainerExit:
        exit_code = 137 if code is None else (128 - code if code < 0 else code)
        message = pod_status.termination_message(
            tail(self.pod_dir / f"{container['name']}.log", lines=80),
            policy=container.get("terminationMessagePolicy"),
            exit_code=exit_code,
        )
        return pod_status.ContainerExit(
            container["name"],
            container.get("image", ""),
            exit_code,
            since,
            pod_status.now(),
            restarts,
            message,
        )

    def _report_terminal(
        self,
        exits: list[pod_status.ContainerExit],
        init_exits: list[pod_status.ContainerExit],
        reason: str | None,
    ) -> None:
        patch = pod_status.terminal_patch(exits, init_exits=init_exits, reason=reason)
        self.runner.patch_status(self.namespace, self.name, patch)


class PodRunner:
    def __init__(
        self,
        api: client.CoreV1Api,
        *,
        node_name: str,
        state_dir: Path,
        pass_env: tuple[str, ...] = (),
    ) -> None:
        self.api = api
        self.node_name = node_name
        self.state_dir = state_dir
        self.pass_env = pass_env
        self.executions: dict[str, PodExecution] = {}
        self.finished: set[str] = set()
        self.lock = threading.Lock()

    # --- I/O helpers -------------------------------------------------------------
    def patch_status(self, namespace: str, name: str, body: Mapping[str, Any]) -> None:
        try:
            self.api.patch_namespaced_pod_status(name, namespace, dict(body), _content_type=SMP)
        except ApiException as exc:
            if exc.status != 404:
                log.warning("pod %s/%s: status patch failed: %s", namespace, name, exc.reason)

    def annotate_log_dir(self, namespace: str, name: str, pod_dir: Path) -> None:
        body = {"metadata": {"annotations": {LOG_DIR_ANNOTATION: str(pod_dir)}}}
        try:
            self.api.patch_namespaced_pod(name, namespace, body, _content_type=SMP)
        except ApiException as exc:
            log.warning("pod %s/%s: annotate failed: %s", namespace, name, exc.reason)

    def secret_lookup(self, namespace: str):  # type: ignore[no-untyped-def]
        def lookup(name: str) -> dict[str, str] | None:
            try:
                secret = self.api.read_namespaced_secret(name, namespace)
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise
            data = decode_secret_data(secret.data)
            return data | dict(secret.string_data or {})

        return lookup

    def config_map_lookup(self, namespace: str):  # type: ignore[no-untyped-def]
        def lookup(name: str) -> dict[str, str] | None:
            try:
                return dict(self.api.read_namespaced_config_map(name, namespace).data or {})
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise

        return lookup

    def heartbeat(self) -> None:
        stamp = pod_status.now()
        conditions = [
            {
                "type": t,
                "status": s,
                "reason": r,
                "message": m,
                "lastHeartbeatTime": stamp,
                "lastTransitionTime": stamp,
            }
            for t, s, r, m in (
                ("Ready", "True", "LocalRunnerReady", "local pod runner is running"),
                ("MemoryPressure", "False", "LocalRunnerReady", ""),
                ("DiskPressure", "False", "LocalRunnerReady", ""),
                ("PIDPressure", "False", "LocalRunnerReady", ""),
            )
        ]
        body = {
            "status": {
                "conditions": conditions,
                "addresses": [
                    {"type": "InternalIP", "address": pod_status.LOCAL_IP},
                    {"type": "Hostname", "address": self.node_name},
                ],
                "nodeInfo": {
                    "architecture": "amd64",
                    "operatingSystem": "linux",
                    "kubeletVersion": "tunegate-local-runner",
                    "kubeProxyVersion": "",
                    "containerRuntimeVersion": "local-process://",
                    "kernelVersion": "",
                    "osImage": "",
                    "machineID": "",
                    "systemUUID": "",
                    "bootID": "",
                },
            }
        }
        self.api.patch_node_status(self.node_name, body, _content_type=SMP)

    # --- reconciliation ----------------------------------------------------------
    def execution_finished(self, uid: str) -> None:
        with self.lock:
            self.executions.pop(uid, None)
            self.finished.add(uid)

    def reconcile(self, pod: Mapping[str, Any]) -> None:
        meta, status = pod["metadata"], pod.get("status") or {}
        uid, namespace, name = meta["uid"], meta["namespace"], meta["name"]
        phase = status.get("phase", "Pending")
        terminal = phase in ("Succeeded", "Failed")
        with self.lock:
            execution = self.executions.get(uid)
            if meta.get("deletionTimestamp"):
                if execution is not None:
                    execution.request_stop(meta.get("deletionGracePeriodSeconds"))
                elif not terminal:
                    self.patch_status(
                        namespace, name, pod_status.terminal_patch([], reason="Deleted")
                    )
                elif not meta.get("finalizers"):
                    self._delete_now(namespace, name, uid)
                return
            if execution is not None or uid in self.finished or terminal:
                return
            if phase == "Running":
                # We were restarted while it ran: its processes died with us.
                self.finished.add(uid)
                self.patch_status(
                    namespace,
                    name,
                    pod_status.terminal_patch(
                        [], reason="NodeRestarted", message="the local pod runner restarted"
                    ),
                )
                return
            execution = PodExecution(self, pod)
            self.executions[uid] = execution
            execution.start()

    def _delete_now(self, namespace: str, name: str, uid: str) -> None:
        try:
            self.api.delete_namespaced_pod(
                name,
                namespace,
                grace_period_seconds=0,
                body=client.V1DeleteOptions(
                    grace_period_seconds=0, preconditions=client.V1Preconditions(uid=uid)
                ),
            )
        except ApiException as exc:
            if exc.status not in (404, 409):
                log.warning("pod %s/%s: delete failed: %s", namespace, name, exc.reason)

    def run_forever(self, stop: threading.Event) -> None:
        def beat() -> None:
            while not stop.is_set():
                try:
                    self.heartbeat()
                except Exception as exc:
                    log.warning("heartbeat failed: %s", exc)
                stop.wait(HEARTBEAT_SECONDS)

        threading.Thread(target=beat, name="heartbeat", daemon=True).start()
        selector = f"spec.nodeName={self.node_name}"
        while not stop.is_set():
            try:
                raw = self.api.list_pod_for_all_namespaces(
                    field_selector=selector, _preload_content=False
                )
                listing = json.loads(cast(Any, raw).data)
                for pod in listing["items"]:
                    self.reconcile(pod)
                stream = watch.Watch().stream(
                    self.api.list_pod_for_all_namespaces,
                    field_selector=selector,
                    resource_version=listing["metadata"]["resourceVersion"],
                    timeout_seconds=60,
                )
                for event in stream:
                    if stop.is_set():
                        break
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self.reconcile(event["raw_object"])
            except Exception as exc:  # the API may restart under us; relist
                log.warning("watch interrupted: %s", exc)
                stop.wait(1)
        with self.lock:
            executions = list(self.executions.values())
        for execution in executions:
            execution.request_stop(5)
        for execution in executions:
            execution.join(timeout=15)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--node-name", required=True)
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--pass-env", default="", help="comma-separated variables passed to pods")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    config.load_kube_config(config_file=args.kubeconfig)
    runner = PodRunner(
        client.CoreV1Api(),
        node_name=args.node_name,
        state_dir=args.state_dir,
        pass_env=tuple(filter(None, args.pass_env.split(","))),
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info("running pods bound to node %s", args.node_name)
    runner.run_forever(stop)
    time.sleep(0.1)


if __name__ == "__main__":
    main()
