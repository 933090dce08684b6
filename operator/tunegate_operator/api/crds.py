"""CustomResourceDefinitions generated from the pydantic models.

`python -m tunegate_operator.api.crds` rewrites crds/ and the Helm chart's copy;
a unit test fails when either is out of date.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from tunegate_operator.api.common import GROUP, VERSION
from tunegate_operator.api.evalgate import EvalGateSpec, EvalGateStatus
from tunegate_operator.api.finetunejob import FineTuneJobSpec, FineTuneJobStatus
from tunegate_operator.api.schema import structural_schema

CATEGORY = "tunegate"


@dataclass(frozen=True)
class Kind:
    kind: str
    plural: str
    short_name: str
    spec: type[BaseModel]
    status: type[BaseModel]
    description: str
    columns: tuple[tuple[str, str, str, str], ...]  # name, type, jsonPath, description

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"

    @property
    def file_name(self) -> str:
        return f"{self.crd_name}.yaml"


KINDS = (
    Kind(
        kind="FineTuneJob",
        plural="finetunejobs",
        short_name="ftj",
        spec=FineTuneJobSpec,
        status=FineTuneJobStatus,
        description=(
            "A fine-tuning run (LoRA, QLoRA or full, optionally with DeepSpeed): its data is "
            "audited on CPU, then it trains on a GPU pool and writes checkpoints, the adapter "
            "and a manifest to S3."
        ),
        columns=(
            ("Phase", "string", ".status.phase", "Lifecycle phase"),
            ("Progress", "integer", ".status.progress.percent", "Percent of steps done"),
            ("Loss", "number", ".status.progress.loss", "Latest training loss"),
            ("GPUs", "integer", ".status.gpus", "GPUs in use (nodes x gpusPerNode)"),
            ("Age", "date", ".metadata.creationTimestamp", "Time since creation"),
        ),
    ),
    Kind(
        kind="EvalGate",
        plural="evalgates",
        short_name="evg",
        spec=EvalGateSpec,
        status=EvalGateStatus,
        description=(
            "Compares a candidate adapter with its base model on target, retention, drift "
            "and safety suites using paired confidence intervals, and promotes it only on Pass."
        ),
        columns=(
            ("Phase", "string", ".status.phase", "Lifecycle phase"),
            ("Verdict", "string", ".status.decision.verdict", "Pass, Fail or Inconclusive"),
            ("Target Δ", "number", ".status.summary.targetDelta", "Target suite delta"),
            ("Retention Δ", "number", ".status.summary.retentionDelta", "Retention delta"),
            ("KL", "number", ".status.summary.kl", "Drift: KL(base || candidate)"),
            ("Age", "date", ".metadata.creationTimestamp", "Time since creation"),
        ),
    ),
)


def crd_document(kind: Kind) -> dict[str, Any]:
    spec_schema = structural_schema(kind.spec)
    status_schema = structural_schema(kind.status)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": kind.crd_name, "labels": {"app.kubernetes.io/part-of": "tunegate"}},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.kind.lower(),
                "shortNames": [kind.short_name],
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": n, "type": t, "jsonPath": p, "description": d}
                        for n, t, p, d in kind.columns
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": kind.description,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string", "description": "API version."},
                                "kind": {"type": "string", "description": "Kind."},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


def render(kind: Kind) -> str:
    header = (
        "# Generated from operator/tunegate_operator/api by "
        "`python -m tunegate_operator.api.crds`; do not edit.\n"
    )
    return header + yaml.safe_dump(crd_document(kind), sort_keys=False, width=100)


CRD_DIRS = (Path("crds"), Path("helm/tunegate/crds"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, default=Path.cwd())
    parser.add_argument("--check", action="store_true", help="fail if files are out of date")
    args = parser.parse_args(argv)
    stale = []
    for directory in CRD_DIRS:
        for kind in KINDS:
            path = args.root / directory / kind.file_name
            text = render(kind)
            if path.exists() and path.read_text() == text:
                continue
            stale.append(str(path))
            if not args.check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
    if stale:
        print(("out of date: " if args.check else "wrote: ") + ", ".join(stale))
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
