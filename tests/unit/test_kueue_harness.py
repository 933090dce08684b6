"""The local cluster's Kueue wiring: upstream's webhook rules kept for Jobs and Kueue's
own kinds only, each pointed at the address Kueue listens on."""

from __future__ import annotations

import base64

import yaml

from tunegate_cluster.kueue import cluster_queue, webhook_configurations


def _webhook(name: str, group: str, resource: str, path: str) -> dict[str, object]:
    return {
        "name": name,
        "admissionReviewVersions": ["v1"],
        "clientConfig": {
            "service": {"name": "webhook-service", "namespace": "system", "path": path}
        },
        "failurePolicy": "Fail",
        "rules": [
            {
                "apiGroups": [group],
                "apiVersions": ["v1"],
                "operations": ["CREATE"],
                "resources": [resource],
            }
        ],
        "sideEffects": "None",
    }


UPSTREAM = yaml.safe_dump_all(
    [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": "mutating-webhook-configuration"},
            "webhooks": [
                _webhook("mjob.kb.io", "batch", "jobs", "/mutate-batch-v1-job"),
                _webhook("mpod.kb.io", "", "pods", "/mutate--v1-pod"),
                _webhook("mdeployment.kb.io", "apps", "deployments", "/mutate-apps-v1-deployment"),
            ],
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": "validating-webhook-configuration"},
            "webhooks": [
                _webhook(
                    "vworkload.kb.io",
                    "kueue.x-k8s.io",
                    "workloads",
                    "/validate-kueue-x-k8s-io-v1beta2-workload",
                ),
                _webhook("vjobset.kb.io", "jobset.x-k8s.io", "jobsets", "/validate-jobset"),
            ],
        },
    ]
)


def test_only_job_and_kueue_webhooks_are_registered_by_url_with_the_ca() -> None:
    mutating, validating = webhook_configurations(
        UPSTREAM, base_url="https://10.88.1.1:9443", ca_bundle=b"CA PEM"
    )
    assert mutating["metadata"] == {"name": "kueue-mutating-webhook-configuration"}
    assert [w["name"] for w in mutating["webhooks"]] == ["mjob.kb.io"]
    assert [w["name"] for w in validating["webhooks"]] == ["vworkload.kb.io"]
    (job,) = mutating["webhooks"]
    assert job["clientConfig"] == {
        "url": "https://10.88.1.1:9443/mutate-batch-v1-job",
        "caBundle": base64.b64encode(b"CA PEM").decode(),
    }
    assert job["failurePolicy"] == "Fail"  # as released


def test_the_cluster_queue_covers_every_resource_a_training_pod_requests() -> None:
    queue = cluster_queue("gpus", flavor="a100", gpus=16, namespace="ml", hold=True)
    (group,) = queue["spec"]["resourceGroups"]
    (flavor,) = group["flavors"]
    quota = {r["name"]: r["nominalQuota"] for r in flavor["resources"]}
    assert set(group["coveredResources"]) == set(quota) >= {
        "cpu", "memory", "ephemeral-storage", "nvidia.com/gpu",
    }  # fmt: skip
    assert quota["nvidia.com/gpu"] == "16"
    assert queue["spec"]["stopPolicy"] == "Hold"
