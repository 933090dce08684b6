"""The API models: one source of truth for CRDs, documented, and matching the examples."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tunegate_operator.api import crds
from tunegate_operator.api.evalgate import EvalGateSpec
from tunegate_operator.api.finetunejob import FineTuneJobSpec, LoraSpec
from tunegate_operator.api.schema import structural_schema, undocumented_fields

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
SPEC_MODELS = {"FineTuneJob": FineTuneJobSpec, "EvalGate": EvalGateSpec}


@pytest.mark.parametrize("directory", crds.CRD_DIRS, ids=str)
@pytest.mark.parametrize("kind", crds.KINDS, ids=lambda k: k.kind)
def test_committed_crds_are_generated_from_the_models(directory: Path, kind: crds.Kind) -> None:
    path = ROOT / directory / kind.file_name
    assert path.read_text() == crds.render(kind), (
        f"{path} is stale: run `python -m tunegate_operator.api.crds`"
    )


@pytest.mark.parametrize("kind", crds.KINDS, ids=lambda k: k.kind)
def test_every_field_is_documented(kind: crds.Kind) -> None:
    schema = crds.crd_document(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for part in ("spec", "status"):
        assert undocumented_fields(schema["properties"][part], path=part) == []


def test_schema_has_no_refs_or_unions_and_uses_openapi3_exclusive_bounds() -> None:
    text = yaml.safe_dump(structural_schema(FineTuneJobSpec))
    assert "$ref" not in text and "anyOf" not in text and "null" not in text
    lora = structural_schema(LoraSpec)["properties"]
    assert lora["dropout"]["maximum"] == 1 and lora["dropout"]["exclusiveMaximum"] is True


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_parse_with_the_models_and_start_with_a_comment(path: Path) -> None:
    text = path.read_text()
    assert text.startswith("# "), "each example starts by saying what it shows"
    assert "kubectl apply" in text.split("apiVersion:")[0]
    for document in yaml.safe_load_all(text):
        SPEC_MODELS[document["kind"]].model_validate(document["spec"])


def test_examples_cover_every_method_and_multinode() -> None:
    specs = [
        FineTuneJobSpec.model_validate(d["spec"])
        for p in EXAMPLES
        for d in yaml.safe_load_all(p.read_text())
        if d["kind"] == "FineTuneJob"
    ]
    assert {s.method for s in specs} == {"lora", "qlora", "full"}
    assert any(s.resources.nodes > 1 and s.deepspeed for s in specs)
    gates = [
        EvalGateSpec.model_validate(d["spec"])
        for p in EXAMPLES
        for d in yaml.safe_load_all(p.read_text())
        if d["kind"] == "EvalGate"
    ]
    assert any(
        {s.role for s in g.suites} == {"target", "retention", "drift", "safety"}
        and g.promotion
        and g.promotion.mode == "manual"
        for g in gates
    )
