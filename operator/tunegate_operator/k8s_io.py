"""The operator's only conversation with the Kubernetes API (besides kopf itself)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any, cast

from kubernetes import client, config
from kubernetes.client import ApiException

from tunegate_contract.base import parse_rfc3339
from tunegate_operator import metrics
from tunegate_operator.api.common import GPU_RESOURCE, GROUP, VERSION
from tunegate_operator.api.names import ATTEMPT_LABEL, COMPONENT_LABEL, FTJ_LABEL
from tunegate_operator.builders.jobs import Names
from tunegate_operator.decisions.pod_failure import describe_pod_failure
from tunegate_operator.decisions.preflight import NodeView
from tunegate_operator.decisions.vocabulary import JobView

log = logging.getLogger(__name__)


def _time(value: object) -> datetime | None:
    return parse_rfc3339(value) if isinstance(value, str) and value else None


class HandoffError(Exception):
    """A promotion.handoff target could not be patched (missing, forbidden, invalid)."""


def _refusal(exc: ApiException, namespace: str) -> str:
    if exc.status == 404:
        return f"not found in namespace {namespace} (the operator patches, never creates, it)"
    if exc.status == 403:
        return (
            "forbidden: the operator's RBAC does not allow patching it; add its resource "
            "to the chart value promotion.handoffResources"
        )
    try:
        message = json.loads(exc.body or "{}").get("message") or exc.reason
    except ValueError:
        message = exc.reason
    return f"refused ({exc.status}): {message}"


class _CountingApiClient(client.ApiClient):
    """Counts every request by verb (tunegate_api_requests_total): how many requests a
    reconcile costs is what decides how far the operator scales."""

    def call_api(self, method: str, *args: Any, **kwargs: Any) -> Any:
        metrics.API_REQUESTS.labels(method).inc()
        return super().call_api(method, *args, **kwargs)


# A pool scaled up (or a node labelled) is seen by preflight within this long.
NODES_TTL_SECONDS = 10.0


class Kube:
    def __init__(self, api_client: client.ApiClient | None = None) -> None:
        if api_client is None:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            api_client = _CountingApiClient()
        self.api_client = api_client
        self._nodes_guard = threading.Lock()
        self._nodes_cache: tuple[float, list[NodeView] | None] = (0.0, None)
        self.core = client.CoreV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)

    # --- reads (raw JSON: the same dict shapes the pure code handles) -------------
    def list_items(self, call: Any, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        response = call(*args, _preload_content=False, **kwargs)
        return list(json.loads(response.data)["items"])

    def children(self, namespace: str, ftj: str) -> tuple[JobView | None, dict[int, JobView]]:
        jobs = self.list_items(
            self.batch.list_namespaced_job, namespace, label_selector=f"{FTJ_LABEL}={ftj}"
        )
        audit: JobView | None = None
        attempts: dict[int, JobView] = {}
        for job in jobs:
            labels = job["metadata"].get("labels") or {}
            if job["metadata"].get("deletionTimestamp"):
                continue
            view = self._job_view(namespace, job)
            if labels.get(COMPONENT_LABEL) == "audit":
                audit = view
            elif labels.get(COMPONENT_LABEL) == "train" and labels.get(ATTEMPT_LABEL, "").isdigit():
                attempts[int(labels[ATTEMPT_LABEL])] = view
        return audit, attempts

    def _job_view(self, namespace: str, job: dict[str, Any]) -> JobView:
        status = job.get("status") or {}
        finished: Any = None
        reason = message = ""
        completion = _time(status.get("completionTime"))
        for cond in status.get("conditions") or []:
            if cond.get("status") == "True" and cond.get("type") in ("Complete", "Failed"):
                finished = cond["type"]
                reason, message = cond.get("reason", ""), cond.get("message", "")
                completion = completion or _time(cond.get("lastTransitionTime"))
        name = job["metadata"]["name"]
        if finished == "Failed":
            message = self._pod_failure_message(namespace, name) or message
        active = int(status.get("active") or 0)
        create_error = ""
        if finished is None and not active and not job["spec"].get("suspend"):
            create_error = self._pod_creation_error(namespace, job["metadata"]["uid"])
        return JobView(
            name=name,
            uid=job["metadata"].get("uid", ""),
            active=active,
            succeeded=int(status.get("succeeded") or 0),
            failed=int(status.get("failed") or 0),
            suspended=bool(job["spec"].get("suspend")),
            finished=finished,
            reason=reason,
            message=message,
            completion_time=completion,
            create_error=create_error,
        )

    def _pod_creation_error(self, namespace: str, job_uid: str) -> str:
        """The API server's refusal of the Job's pods (Pod Security, quota, a missing
        ServiceAccount), from the Job controller's latest FailedCreate event."""
        events = self.list_items(
            self.core.list_namespaced_event,
            namespace,
            field_selector=f"involvedObject.uid={job_uid},reason=FailedCreate",
        )
        if not events:
            return ""
        latest = max(events, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
        return str(latest.get("message") or "")

    def _pod_failure_message(self, namespace: str, job_name: str) -> str:
        """Why the Job's pod failed: OOMKilled with its limit, evicted, or the exit code
        and termination message (its log tail)."""
        for pod in self.list_items(
            self.core.list_namespaced_pod, namespace, label_selector=f"job-name={job_name}"
        ):
            if message := describe_pod_failure(pod):
                return message
        return ""

    def first_pod_started(self, namespace: str, job_name: str) -> datetime | None:
        pods = self.list_items(
            self.core.list_namespaced_pod, namespace, label_selector=f"job-name={job_name}"
        )
        times = [t for p in pods if (t := _time(p["metadata"].get("creationTimestamp")))]
        return min(times) if times else None

    def job_view(self, namespace: str, name: str) -> JobView | None:
        try:
            response = self.batch.read_namespaced_job(name, namespace, _preload_content=False)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        job = json.loads(cast(Any, response).data)
        return None if job["metadata"].get("deletionTimestamp") else self._job_view(namespace, job)

    def secret_keys(self, namespace: str, name: str) -> frozenset[str] | None:
        """Key names only; values are never read into a message or a log."""
        try:
            response = self.core.read_namespaced_secret(name, namespace, _preload_content=False)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return frozenset((json.loads(cast(Any, response).data).get("data") or {}).keys())

    def nodes(self) -> list[NodeView]:
        """The cluster's nodes, listed at most once per NODES_TTL_SECONDS: every new run's
        preflight needs them, and a thousand runs applied at once would each list them."""
        with self._nodes_guard:
            listed_at, views = self._nodes_cache
            if views is not None and time.monotonic() - listed_at < NODES_TTL_SECONDS:
                return views
        views = self._list_nodes()
        with self._nodes_guard:
            self._nodes_cache = (time.monotonic(), views)
        return views

    def _list_nodes(self) -> list[NodeView]:
        views = []
        for node in self.list_items(self.core.list_node):
            allocatable = (node.get("status") or {}).get("allocatable") or {}
            views.append(
                NodeView(
                    name=node["metadata"]["name"],
                    labels=dict(node["metadata"].get("labels") or {}),
                    gpus=int(allocatable.get(GPU_RESOURCE, "0")),
                    taints=list((node.get("spec") or {}).get("taints") or []),
                )
            )
        return views

    def read_ftj(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            response = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, "finetunejobs", name, _preload_content=False
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return dict(json.loads(cast(Any, response).data))

    def peering_status(self, name: str, namespace: str | None) -> dict[str, Any] | None:
        """The status of kopf's peering object (cluster-wide when namespace is None):
        each replica's priority, lifetime and last keep-alive. None when it is absent."""
        try:
            if namespace is None:
                response = self.custom.get_cluster_custom_object(
                    "kopf.dev", "v1", "clusterkopfpeerings", name, _preload_content=False
                )
            else:
                response = self.custom.get_namespaced_custom_object(
                    "kopf.dev", "v1", namespace, "kopfpeerings", name, _preload_content=False
                )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return dict(json.loads(cast(Any, response).data).get("status") or {})

    # --- writes (all idempotent) ---------------------------------------------------
    def create(self, manifest: Mapping[str, Any]) -> bool:
        """Create; an existing object of that name counts as done. True if created."""
        namespace = manifest["metadata"]["namespace"]
        try:
            if manifest["kind"] == "Job":
                self.batch.create_namespaced_job(namespace, cast(Any, dict(manifest)))
            elif manifest["kind"] == "Service":
                self.core.create_namespaced_service(namespace, cast(Any, dict(manifest)))
            elif manifest["kind"] == "ServiceAccount":
                self.core.create_namespaced_service_account(namespace, cast(Any, dict(manifest)))
            else:
                raise ValueError(f"unexpected kind {manifest['kind']}")
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    def create_workload(
        self, job: Mapping[str, Any], service_account: Mapping[str, Any] | None
    ) -> bool:
        """A Job whose pods run as service_account: that first, if the operator manages it
        (an existing one is left as it is)."""
        if service_account is not None:
            self.create(service_account)
        return self.create(job)

    def set_job_suspended(self, namespace: str, name: str, *, suspend: bool) -> None:
        self.batch.patch_namespaced_job(
            name,
            namespace,
            {"spec": {"suspend": suspend}},
            _content_type="application/merge-patch+json",
        )

    def delete_children(self, namespace: str, ftj: str) -> None:
        selector = f"{FTJ_LABEL}={ftj}"
        for job in self.list_items(
            self.batch.list_namespaced_job, namespace, label_selector=selector
        ):
            try:
                self.batch.delete_namespaced_job(
                    job["metadata"]["name"], namespace, propagation_policy="Background"
                )
            except ApiException as exc:
                if exc.status != 404:
                    raise
        try:
            self.core.delete_namespaced_service(Names(ftj).service, namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def patch_status(
        self, plural: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> None:
        self.custom.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            namespace,
            plural,
            name,
            {"status": dict(status)},
            _content_type="application/merge-patch+json",
        )

    def read_custom(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            response = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, name, _preload_content=False
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return dict(json.loads(cast(Any, response).data))

    def upsert_config_map(self, namespace: str, name: str, data: Mapping[str, str]) -> None:
        """Create or update the ConfigMap serving reads (only the keys given)."""
        body = {
            "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "tunegate"}},
            "data": dict(data),
        }
        try:
            self.core.patch_namespaced_config_map(
                name, namespace, body, _content_type="application/merge-patch+json"
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
            self.core.create_namespaced_config_map(namespace, cast(Any, body))

    def merge_patch(
        self, api_version: str, kind: str, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> None:
        """RFC 7386 merge patch of any namespaced object (the kind found by discovery);
        HandoffError says what went wrong in one line."""
        target = f"{api_version} {kind}/{name}"
        base = f"/apis/{api_version}" if "/" in api_version else f"/api/{api_version}"
        plural = self._plural(base, kind, target)
        try:
            self._request(
                "PATCH",
                f"{base}/namespaces/{namespace}/{plural}/{name}",
                body=dict(patch),
                content_type="application/merge-patch+json",
            )
        except ApiException as exc:
            raise HandoffError(f"{target}: {_refusal(exc, namespace)}") from None

    def _plural(self, base: str, kind: str, target: str) -> str:
        try:
            discovery = self._request("GET", base)
        except ApiException as exc:
            if exc.status == 404:
                raise HandoffError(
                    f"{target}: this cluster does not serve that apiVersion"
                ) from None
            raise
        for resource in discovery.get("resources", []):
            if resource.get("kind") == kind and "/" not in resource["name"]:
                if not resource.get("namespaced"):
                    raise HandoffError(
                        f"{target}: {kind} is cluster-scoped; handoff patches objects in the "
                        "gate's namespace"
                    )
                return str(resource["name"])
        raise HandoffError(f"{target}: this cluster serves no kind {kind} in that apiVersion")

    def _request(
        self, method: str, path: str, *, body: Any = None, content_type: str | None = None
    ) -> dict[str, Any]:
        """One raw API call (any kind, no generated model); ApiException on refusal."""
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        api = cast(Any, self.api_client)
        serialized = api.param_serialize(
            method, path, header_params=headers, body=body, auth_settings=["BearerToken"]
        )
        response = api.call_api(*serialized[:4])
        response.read()
        if not 200 <= response.status <= 299:
            raise ApiException(http_resp=response)
        return dict(json.loads(response.data or b"{}"))

    def patch_ftj_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            namespace,
            "finetunejobs",
            name,
            {"status": dict(status)},
            _content_type="application/merge-patch+json",
        )
