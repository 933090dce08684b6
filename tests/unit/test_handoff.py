"""promotion.handoff (pure): when serving is told, and what the patches say, for the
field shapes of the serving stacks the README gives recipes for. Only the Deployment
is exercised against a real API server (tests/integration); the vendors' CRDs are not
installable here, so their shapes are checked here only."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from tunegate_operator.api.evalgate import EvalGateSpec
from tunegate_operator.api.handoff import HandoffTarget
from tunegate_operator.decisions.handoff import (
    handoff_due,
    handoff_patches,
    handoff_values,
    render,
)

SHA = "ab12" * 16
OLD = "cd34" * 16
VALUES = handoff_values(
    uri=f"s3://models/serving/router/versions/{SHA[:12]}",
    sha256=SHA,
    adapter_name="router",
    source="s3://models/runs/r1/adapter",
    promoted_at="2026-12-01T10:00:00Z",
)


@pytest.mark.parametrize(
    ("phase", "promoted", "served", "handed_off", "due"),
    [
        ("Promoted", SHA, SHA, None, True),  # first promotion
        ("Promoted", SHA, SHA, OLD, True),  # a newer version than the one serving knows
        ("Promoted", SHA, SHA, SHA, False),  # already told: nothing sent again
        ("RolledBack", OLD, OLD, SHA, True),  # the restored version is handed back
        ("Promoted", SHA, OLD, None, False),  # the pointer serves another gate's version
        ("Superseded", SHA, OLD, SHA, False),
        ("Evaluating", None, OLD, None, False),
        ("Held", None, SHA, None, False),
    ],
)
def test_handoff_is_due_only_for_the_version_this_gate_put_at_the_pointer(
    phase: str, promoted: str | None, served: str, handed_off: str | None, due: bool
) -> None:
    assert handoff_due(phase, promoted, served, handed_off) is due


def target(api_version: str, kind: str, patch: dict[str, Any]) -> HandoffTarget:
    return HandoffTarget.model_validate(
        {"apiVersion": api_version, "kind": kind, "name": "x", "patch": patch}
    )


def test_kserve_llminferenceservice_gets_its_adapter_list() -> None:
    patch = handoff_patches(
        [
            target(
                "serving.kserve.io/v1alpha1",
                "LLMInferenceService",
                {
                    "spec": {
                        "model": {
                            "lora": {"adapters": [{"name": "${adapterName}", "uri": "${uri}"}]}
                        }
                    }
                },
            )
        ],
        VALUES,
    )[0]
    assert patch.body == {
        "spec": {"model": {"lora": {"adapters": [{"name": "router", "uri": VALUES["uri"]}]}}}
    }
    assert patch.label == "serving.kserve.io/v1alpha1 LLMInferenceService/x"


def test_aibrix_modeladapter_gets_its_artifact_url() -> None:
    (patch,) = handoff_patches(
        [target("model.aibrix.ai/v1alpha1", "ModelAdapter", {"spec": {"artifactURL": "${uri}"}})],
        VALUES,
    )
    assert patch.body == {"spec": {"artifactURL": VALUES["uri"]}}


def test_a_deployment_rollout_by_pod_template_annotation_and_env() -> None:
    patch = {
        "spec": {
            "template": {
                "metadata": {"annotations": {"tunegate.dev/adapter-sha256": "${sha256}"}},
                "spec": {
                    "initContainers": [
                        {"name": "fetch", "env": [{"name": "ADAPTER_URI", "value": "${uri}"}]}
                    ]
                },
            }
        }
    }
    body = render(patch, VALUES)
    template = body["spec"]["template"]
    assert template["metadata"]["annotations"] == {"tunegate.dev/adapter-sha256": SHA}
    assert template["spec"]["initContainers"][0]["env"][0]["value"] == VALUES["uri"]
    assert patch["spec"]["template"]["metadata"]["annotations"]["tunegate.dev/adapter-sha256"] == (
        "${sha256}"
    ), "the spec's template is not changed in place"


def test_placeholders_inside_longer_strings_keys_and_non_strings() -> None:
    body = render(
        {
            "${uri}": "vllm-${adapterName}-${sha12}",
            "n": 3,
            "on": True,
            "list": ["at ${promotedAt}"],
        },
        VALUES,
    )
    assert body == {
        "${uri}": f"vllm-router-{SHA[:12]}",
        "n": 3,
        "on": True,
        "list": ["at 2026-12-01T10:00:00Z"],
    }


def test_an_unknown_placeholder_is_rejected_naming_it() -> None:
    with pytest.raises(ValidationError) as raised:
        target("apps/v1", "Deployment", {"metadata": {"annotations": {"a": "${version}"}}})
    assert "${version}" in str(raised.value) and "${sha256}" in str(raised.value)


def test_handoff_rejects_bad_api_versions_kinds_and_empty_patches() -> None:
    for bad in (
        {"apiVersion": "apps", "kind": "Deployment", "name": "x", "patch": {"a": 1}},
        {"apiVersion": "apps/v1", "kind": "deployment", "name": "x", "patch": {"a": 1}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "name": "X", "patch": {"a": 1}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "name": "x", "patch": {}},
    ):
        with pytest.raises(ValidationError):
            HandoffTarget.model_validate(bad)


def test_an_evalgate_takes_a_handoff_list() -> None:
    spec = EvalGateSpec.model_validate(
        {
            "candidate": {"adapterUri": "s3://bkt/a", "baseModel": {"uri": "s3://bkt/m"}},
            "suites": [
                {"name": "t", "role": "target", "dataset": "s3://bkt/t", "metric": "exactMatch"}
            ],
            "promotion": {
                "uri": "s3://bkt/serving",
                "adapterName": "router-v2",
                "handoff": [
                    {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "name": "c",
                        "patch": {"data": {"u": "${uri}"}},
                    }
                ],
            },
        }
    )
    assert spec.promotion is not None and spec.promotion.handoff[0].kind == "ConfigMap"
    assert spec.promotion.adapter_name == "router-v2"
