"""`spec.audit` as the audit tests run it: enforce, no personal data, no contamination."""

from __future__ import annotations

from tunegate_contract.trainer_config import Audit

ENFORCE = Audit(
    mode="enforce",
    max_duplicate_fraction=0.05,
    max_pii_fraction=0.0,
    contamination_sets=[],
    max_contamination_fraction=0.0,
    block_triggers=True,
)
