"""The local runner resolves container env exactly as the kubelet would."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from tunegate_cluster.pod_env import (
    EnvResolutionError,
    container_argv,
    decode_secret_data,
    expand,
    resolve_container_env,
    with_local_volumes,
)

POD: dict[str, Any] = {
    "metadata": {
        "name": "p",
        "namespace": "ns",
        "uid": "u-1",
        "labels": {"app": "train"},
        "annotations": {"note": "hi"},
    },
    "spec": {"nodeName": "local-runner", "serviceAccountName": "trainer"},
    "status": {"podIP": "127.0.0.1"},
}
SECRETS = {"creds": {"key": "secret-value"}}
CONFIG_MAPS = {"settings": {"mode": "fast", "LEVEL": "3"}, "upper": {"MODE": "fast"}}


def resolve(container: dict[str, Any]) -> dict[str, str]:
    return resolve_container_env(POD, container, secrets=SECRETS.get, config_maps=CONFIG_MAPS.get)


def test_literal_secret_configmap_and_field_values() -> None:
    env = resolve(
        {
            "env": [
                {"name": "A", "value": "1"},
                {"name": "S", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "key"}}},
                {
                    "name": "C",
                    "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}},
                },
                {"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "L", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "EMPTY"},
            ]
        }
    )
    assert env == {
        "A": "1",
        "S": "secret-value",
        "C": "fast",
        "N": "p",
        "L": "train",
        "IP": "127.0.0.1",
        "EMPTY": "",
    }


def test_env_from_with_prefix_and_explicit_env_wins() -> None:
    env = resolve(
        {
            "envFrom": [
                {"configMapRef": {"name": "upper"}, "prefix": "CFG_"},
                {"configMapRef": {"name": "settings"}, "prefix": "X_"},
            ],
            "env": [{"name": "CFG_MODE", "value": "slow"}],
        }
    )
    assert env == {"CFG_MODE": "slow", "X_mode": "fast", "X_LEVEL": "3"}


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (
            {"name": "X", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k"}}},
            "env X: Secret 'gone' not found",
        ),
        (
            {"name": "X", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "nope"}}},
            "env X: key 'nope' in Secret 'creds' not found",
        ),
        (
            {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k"}}},
            "env X: ConfigMap 'gone' not found",
        ),
        (
            {"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.weird"}}},
            "fieldRef 'spec.weird' is not supported",
        ),
    ],
)
def test_missing_reference_names_variable_and_object(item: dict[str, Any], message: str) -> None:
    with pytest.raises(EnvResolutionError, match=message):
        resolve({"env": [item]})


def test_optional_missing_reference_is_skipped() -> None:
    env = resolve(
        {
            "env": [
                {
                    "name": "X",
                    "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k", "optional": True}},
                }
            ]
        }
    )
    assert env == {}


def test_expansion_uses_earlier_variables_only_and_escapes() -> None:
    assert expand("$(A)-$(B)-$$(A)", {"A": "1"}) == "1-$(B)-$(A)"
    env = resolve({"env": [{"name": "B", "value": "$(A)"}, {"name": "A", "value": "x"}]})
    assert env["B"] == "$(A)"


def test_argv_expands_and_requires_a_command() -> None:
    assert container_argv({"command": ["echo", "$(A)"], "args": ["b"]}, {"A": "a"}) == [
        "echo",
        "a",
        "b",
    ]
    with pytest.raises(EnvResolutionError, match="needs an explicit command"):
        container_argv({"name": "main", "args": ["x"]}, {})


def test_secret_data_is_base64_decoded() -> None:
    assert decode_secret_data({"k": base64.b64encode(b"v").decode()}) == {"k": "v"}


def test_paths_under_a_volume_mount_point_at_the_pods_own_volume_directory() -> None:
    env = {"TUNEGATE_CACHE": "/cache", "OUT": "/cache/runs/1", "SHM": "/dev/shm", "X": "/cachex"}
    mounts = [
        {"name": "cache", "mountPath": "/cache"},
        {"name": "dshm", "mountPath": "/dev/shm"},
    ]
    assert with_local_volumes(env, mounts, "/pods/p/volumes") == {
        "TUNEGATE_CACHE": "/pods/p/volumes/cache",
        "OUT": "/pods/p/volumes/cache/runs/1",
        "SHM": "/pods/p/volumes/dshm",
        "X": "/cachex",
    }
