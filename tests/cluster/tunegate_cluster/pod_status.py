"""Pod status documents the local runner reports, built as pure data."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

LOCAL_IP = "127.0.0.1"
MAX_TERMINATION_MESSAGE_BYTES = 4096


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class ContainerExit:
    name: str
    image: str
    exit_code: int
    started_at: str
    finished_at: str
    restart_count: int = 0
    message: str = ""


def _conditions(*, ready: bool, initialized: bool = True) -> list[dict[str, str]]:
    stamp = now()
    return [
        {"type": "Initialized", "status": str(initialized), "lastTransitionTime": stamp},
        {"type": "ContainersReady", "status": str(ready), "lastTransitionTime": stamp},
        {"type": "Ready", "status": str(ready), "lastTransitionTime": stamp},
    ]


def terminated_status(exit_: ContainerExit) -> dict[str, Any]:
    terminated: dict[str, Any] = {
        "exitCode": exit_.exit_code,
        "reason": "Completed" if exit_.exit_code == 0 else "Error",
        "startedAt": exit_.started_at,
        "finishedAt": exit_.finished_at,
    }
    if exit_.message:
        terminated["message"] = exit_.message
    return {
        "name": exit_.name,
        "image": exit_.image,
        "imageID": "",
        "ready": False,
        "started": False,
        "restartCount": exit_.restart_count,
        "state": {"terminated": terminated},
    }


def waiting_patch(
    containers: Sequence[Mapping[str, Any]], *, reason: str, message: str
) -> dict[str, Any]:
    """Pending with a reason, like the kubelet's CreateContainerConfigError."""
    return {
        "status": {
            "phase": "Pending",
            "hostIP": LOCAL_IP,
            "conditions": _conditions(ready=False, initialized=False),
            "containerStatuses": [
                {
                    "name": c["name"],
                    "image": c.get("image", ""),
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "state": {"waiting": {"reason": reason, "message": message}},
                }
                for c in containers
            ],
        }
    }


def running_patch(
    containers: Sequence[Mapping[str, Any]],
    *,
    started_at: str,
    restart_counts: Mapping[str, int],
    init_exits: Sequence[ContainerExit] = (),
) -> dict[str, Any]:
    return {
        "status": {
            "phase": "Running",
            "hostIP": LOCAL_IP,
            "hostIPs": [{"ip": LOCAL_IP}],
            "podIP": LOCAL_IP,
            "podIPs": [{"ip": LOCAL_IP}],
            "startTime": started_at,
            "conditions": _conditions(ready=True),
            "initContainerStatuses": [terminated_status(e) for e in init_exits],
            "containerStatuses": [
                {
                    "name": c["name"],
                    "image": c.get("image", ""),
                    "imageID": "",
                    "ready": True,
                    "started": True,
                    "restartCount": restart_counts.get(c["name"], 0),
                    "state": {"running": {"startedAt": started_at}},
                }
                for c in containers
            ],
        }
    }


def final_phase(exits: Sequence[ContainerExit]) -> str:
    return "Succeeded" if exits and all(e.exit_code == 0 for e in exits) else "Failed"


def terminal_patch(
    exits: Sequence[ContainerExit],
    *,
    init_exits: Sequence[ContainerExit] = (),
    reason: str | None = None,
    message: str | None = None,
) -> dict[str, Any]:
    status: dict[str, Any] = {
        "phase": "Failed" if reason else final_phase(exits),
        "conditions": _conditions(ready=False),
        "containerStatuses": [terminated_status(e) for e in exits],
    }
    if init_exits:
        status["initContainerStatuses"] = [terminated_status(e) for e in init_exits]
    if reason:
        status["reason"] = reason
    if message:
        status["message"] = message
    return {"status": status}


def termination_message(log_tail: str, *, policy: str | None, exit_code: int) -> str:
    """What the kubelet puts in state.terminated.message for FallbackToLogsOnError."""
    if policy != "FallbackToLogsOnError" or exit_code == 0:
        return ""
    encoded = log_tail.encode()[-MAX_TERMINATION_MESSAGE_BYTES:]
    return encoded.decode(errors="replace")
