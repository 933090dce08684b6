"""Why a pod failed, as the FineTuneJob's condition says it (pure)."""

from __future__ import annotations

from typing import Any

from tunegate_operator.decisions.pod_failure import describe_pod_failure


def _pod(
    terminated: dict[str, Any] | None,
    *,
    limit: str | None = None,
    state: str = "state",
    **status: Any,
) -> dict[str, Any]:
    resources = {"limits": {"memory": limit}} if limit else {}
    statuses = [{"name": "train", state: {"terminated": terminated}}] if terminated else []
    return {
        "metadata": {"name": "run-train-1-abc"},
        "spec": {"containers": [{"name": "train", "resources": resources}]},
        "status": {"containerStatuses": statuses, **status},
    }


def test_an_oom_kill_names_the_container_and_its_memory_limit() -> None:
    message = describe_pod_failure(_pod({"exitCode": 137, "reason": "OOMKilled"}, limit="300Mi"))
    assert "OOMKilled" in message
    assert "ran out of memory" in message
    assert "300Mi" in message and "spec.resources.memory" in message
    assert "container train of pod run-train-1-abc" in message


def test_an_oom_kill_without_a_limit_says_the_node_ran_out() -> None:
    message = describe_pod_failure(_pod({"exitCode": 137, "reason": "OOMKilled"}))
    assert "OOMKilled" in message and "no memory limit" in message


def test_a_restarted_containers_last_termination_counts() -> None:
    pod = _pod({"exitCode": 137, "reason": "OOMKilled"}, limit="1Gi", state="lastState")
    assert "1Gi" in describe_pod_failure(pod)


def test_an_eviction_says_why() -> None:
    pod = _pod(None, reason="Evicted", message="The node was low on resource: memory.")
    assert describe_pod_failure(pod) == (
        "pod run-train-1-abc was evicted: The node was low on resource: memory."
    )


def test_other_failures_keep_exit_code_and_log_tail() -> None:
    pod = _pod({"exitCode": 2, "reason": "Error", "message": "a\nb\nc\nerror: x.jsonl:3: bad"})
    assert describe_pod_failure(pod) == (
        "pod run-train-1-abc exited with code 2: b | c | error: x.jsonl:3: bad"
    )


def test_a_clean_exit_explains_nothing() -> None:
    assert describe_pod_failure(_pod({"exitCode": 0, "reason": "Completed"})) == ""
    assert describe_pod_failure(_pod(None)) == ""
