"""Why a pod failed, in words a person can act on: pure, from the pod as the API
server returns it."""

from __future__ import annotations

from typing import Any

OOM_KILLED = "OOMKilled"


def _memory_limits(pod: dict[str, Any]) -> dict[str, str]:
    return {
        container["name"]: str(limit)
        for container in (pod.get("spec") or {}).get("containers") or []
        if (limit := ((container.get("resources") or {}).get("limits") or {}).get("memory"))
    }


def _terminations(pod: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for container in (pod.get("status") or {}).get("containerStatuses") or []:
        for state in ("state", "lastState"):
            terminated = (container.get(state) or {}).get("terminated")
            if terminated:
                found.append((str(container.get("name", "")), terminated))
                break
    return found


def describe_pod_failure(pod: dict[str, Any]) -> str:
    """'' when nothing in the pod explains a failure."""
    name = (pod.get("metadata") or {}).get("name", "?")
    status = pod.get("status") or {}
    if status.get("reason") == "Evicted":
        return f"pod {name} was evicted: {status.get('message') or 'no reason given'}"
    limits = _memory_limits(pod)
    terminations = _terminations(pod)
    for container, terminated in terminations:
        if terminated.get("reason") == OOM_KILLED:
            limit = limits.get(container)
            bound = (
                f"its memory limit of {limit} (spec.resources.memory)"
                if limit
                else "the node's memory (it had no memory limit)"
            )
            return (
                f"container {container} of pod {name} was OOMKilled: it ran out of memory "
                f"at {bound}; exit code {terminated.get('exitCode', 137)}"
            )
    for _, terminated in terminations:
        if terminated.get("exitCode"):
            tail = (terminated.get("message") or "").strip().splitlines()[-3:]
            detail = f": {' | '.join(tail)}" if tail else ""
            return f"pod {name} exited with code {terminated['exitCode']}{detail}"
    return ""
