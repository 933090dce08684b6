"""The Helm chart, rendered by the pinned helm: lint, schema, security and RBAC shape.
(`helm install` into the local cluster runs in every operator test's set-up.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tunegate_cluster import chart
from tunegate_cluster.cluster import ensure_binaries

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bin_dir() -> str:
    return str(ensure_binaries())


def by_kind(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in documents if d["kind"] == kind]


def operator_container(documents: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = by_kind(documents, "Deployment")
    container: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_chart_lints_and_ships_the_generated_crds(bin_dir: str) -> None:
    chart.helm(None, "lint", "--strict", str(chart.CHART), bin_dir=bin_dir)
    shipped = sorted(p.name for p in (chart.CHART / "crds").iterdir())
    assert shipped == sorted(p.name for p in (ROOT / "crds").iterdir())
    for name in shipped:
        assert (chart.CHART / "crds" / name).read_bytes() == (ROOT / "crds" / name).read_bytes()


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"operator.replica": 2}, "additional properties 'replica' not allowed"),
        ({"watchNamespace": ["ml"]}, "additional properties 'watchNamespace' not allowed"),
        ({"s3.endpoint": "minio:9000"}, "/s3/endpoint"),
        ({"operator.logLevel": "TRACE"}, "/operator/logLevel"),
        ({"metrics.port": 0}, "/metrics/port"),
    ],
)
def test_a_typo_or_bad_value_fails_the_install(
    bin_dir: str, values: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(chart.HelmError, match="values don't meet the specifications") as caught:
        chart.template(bin_dir, values)
    assert complaint in str(caught.value)


def test_operator_deployment_is_locked_down_and_probed(bin_dir: str) -> None:
    documents = chart.template(
        bin_dir, {"s3.credentialsSecret": "s3-creds", "s3.endpoint": "https://minio.example"}
    )
    (deployment,) = by_kind(documents, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = operator_container(documents)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["serviceAccountName"] == "tunegate-operator"
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["port"] == "health"
    assert container["resources"]["limits"]["memory"]
    assert "--all-namespaces" in container["args"]
    assert any(a.startswith("--liveness=http://0.0.0.0:8081") for a in container["args"])
    env = env_of(container)
    assert env["TUNEGATE_PEERING_MANDATORY"] == "true"
    assert env["TUNEGATE_S3_ENDPOINT"] == "https://minio.example"
    # Credentials only by reference.
    assert env["AWS_SECRET_ACCESS_KEY"] == {
        "secretKeyRef": {"name": "s3-creds", "key": "AWS_SECRET_ACCESS_KEY"}
    }
    (peering,) = by_kind(documents, "ClusterKopfPeering")
    assert peering["metadata"]["name"] == "tunegate"
    (service,) = by_kind(documents, "Service")
    assert service["spec"]["ports"][0]["port"] == 8080
    assert by_kind(documents, "ServiceMonitor") == []
    assert by_kind(
        chart.template(bin_dir, {"metrics.serviceMonitor.enabled": True}), "ServiceMonitor"
    )


def test_rbac_is_least_privilege(bin_dir: str) -> None:
    documents = chart.template(bin_dir)
    rules = {role["metadata"]["name"]: role["rules"] for role in by_kind(documents, "ClusterRole")}
    for role_rules in rules.values():
        for rule in role_rules:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"]
    workloads = {
        resource: set(rule["verbs"])
        for rule in rules["tunegate-workloads"]
        for resource in rule["resources"]
    }
    assert workloads["secrets"] == {"get"}  # key names only; never listed or watched
    assert workloads["serviceaccounts"] == {"create"}  # only the trainer's, where missing
    assert workloads["finetunejobs/status"] == {"get", "patch"}
    assert "update" not in workloads["finetunejobs"] and "delete" not in workloads["evalgates"]
    assert workloads["deployments"] == {"get", "patch"}  # promotion.handoff's default kind
    serving = chart.template(
        bin_dir,
        {
            "promotion.handoffResources": [
                {"apiGroups": ["serving.kserve.io"], "resources": ["llminferenceservices"]}
            ]
        },
    )
    handoff = [
        rule
        for role in by_kind(serving, "ClusterRole")
        if role["metadata"]["name"] == "tunegate-workloads"
        for rule in role["rules"]
        if rule["apiGroups"] in (["apps"], ["serving.kserve.io"])
    ]
    assert handoff == [
        {
            "apiGroups": ["serving.kserve.io"],
            "resources": ["llminferenceservices"],
            "verbs": ["get", "patch"],
        }
    ]
    trainer_accounts = [
        sa
        for sa in by_kind(documents, "ServiceAccount")
        if sa["metadata"]["name"] == "tunegate-trainer"
    ]
    assert trainer_accounts and all(
        sa["automountServiceAccountToken"] is False for sa in trainer_accounts
    )
    bindings = by_kind(documents, "ClusterRoleBinding")
    assert {b["roleRef"]["name"] for b in bindings} == set(rules)
    # Cluster-wide, the chart cannot know the namespaces: the operator makes the account.
    env = env_of(operator_container(documents))
    assert env["TUNEGATE_TRAINER_SERVICE_ACCOUNT"] == "tunegate-trainer"
    assert env["TUNEGATE_TRAINER_SERVICE_ACCOUNT_CREATE"] == "true"


def test_watched_namespaces_get_role_bindings_instead_of_cluster_wide_access(
    bin_dir: str,
) -> None:
    documents = chart.template(bin_dir, {"watchNamespaces": ["ml", "research"]})
    assert [b["roleRef"]["name"] for b in by_kind(documents, "ClusterRoleBinding")] == [
        "tunegate-cluster"
    ]
    assert sorted(b["metadata"]["namespace"] for b in by_kind(documents, "RoleBinding")) == [
        "ml",
        "research",
    ]
    container = operator_container(documents)
    assert "--namespace=ml" in container["args"] and "--all-namespaces" not in container["args"]
    assert env_of(container)["TUNEGATE_TRAINER_SERVICE_ACCOUNT"] == "tunegate-trainer"
    trainer_namespaces = sorted(
        sa["metadata"]["namespace"]
        for sa in by_kind(documents, "ServiceAccount")
        if sa["metadata"]["name"] == "tunegate-trainer"
    )
    assert trainer_namespaces == ["ml", "research", chart.NAMESPACE]
