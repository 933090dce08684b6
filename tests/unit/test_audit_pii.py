"""Personal data and credentials by kind, from maintained detectors and checksums;
look-alike numbers are not reported, and no value leaves the audit."""

from __future__ import annotations

import json

import pytest
from audit_settings import ENFORCE as SETTINGS

from tunegate_cluster.audit_data import docstring_qa
from tunegate_trainer.audit import AuditRow, audit
from tunegate_trainer.audit.pii import pii_kinds


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("write to jane.doe@example.com today", "email"),
        ("call +1 415-555-0132 now", "phone"),
        ("call (415) 555-0132 after six", "phone"),
        ("our London office: +44 20 7946 0958", "phone"),
        ("Paris: +33 1 42 68 53 00.", "phone"),
        ("my SSN is 123-45-6789", "us_ssn"),
        ("card 4111 1111 1111 1111 please", "card_number"),
        ("pay to GB82 WEST 1234 5698 7654 32 by Friday", "iban"),
        ("key AKIAIOSFODNN7EXAMPLE here", "aws_access_key"),
        ("token ghp_abcdefghijklmnopqrstuvwxyz0123456789", "github_token"),
        ("xoxb-123456789012-1234567890123-abcdefABCDEFabcdef", "slack_token"),
        ("-----BEGIN RSA PRIVATE KEY-----", "private_key"),
        ("postgres://admin:s3cretpass@db.internal/app", "basic_auth_credentials"),
        (
            "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJl",
            "json_web_token",
        ),
    ],
)
def test_each_kind_is_found(text: str, kind: str) -> None:
    assert kind in pii_kinds(text)


@pytest.mark.parametrize(
    "text",
    [
        "order 4111 1111 1111 1112 shipped",  # Luhn fails
        "ticket 1234 5678 9012 3456 closed",  # no card issuer, Luhn fails
        "pay to GB82 WEST 1234 5698 7654 33",  # IBAN check digits fail
        "ID 000-12-3456 and 666-12-3456",  # never-issued SSN areas
        "The release 2024-01-15 fixed 3 bugs in version 1.2.3, see issue 12345678.",
        "1024 * 1024 = 1048576 bytes; coordinates 40.7128, -74.0060",
        "Use os.path.join(a, b) to build a path; internationalization matters.",
    ],
)
def test_look_alikes_are_not_reported(text: str) -> None:
    assert pii_kinds(text) == []


def test_clean_docstring_qa_has_no_personal_data() -> None:
    pairs = docstring_qa(1500, seed=41)
    found = {kind for pair in pairs for kind in pii_kinds(f"{pair.prompt}\n{pair.response}")}
    assert found == set()


def test_findings_and_report_name_kinds_and_rows_never_values() -> None:
    secret_values = ["jane.doe@example.com", "123-45-6789", "AKIAIOSFODNN7EXAMPLE"]
    rows = [
        AuditRow(f"train.jsonl:{i + 1}", pair.prompt, pair.response)
        for i, pair in enumerate(docstring_qa(300, seed=42))
    ]
    rows[10] = AuditRow("train.jsonl:11", "Mail jane.doe@example.com", "Done.")
    rows[20] = AuditRow("train.jsonl:21", "My SSN is 123-45-6789", "Noted.")
    rows[30] = AuditRow("train.jsonl:31", "Use AKIAIOSFODNN7EXAMPLE", "Ok.")
    result = audit(rows, settings=SETTINGS)
    assert result.verdict == "Failed"
    (finding,) = [f for f in result.findings if f.startswith("pii:")]
    assert "3 rows (aws_access_key, email, us_ssn)" in finding and "train.jsonl:11" in finding
    assert result.checks["pii"]["by_kind"] == {"aws_access_key": 1, "email": 1, "us_ssn": 1}
    report = json.dumps(result.report().to_json())
    for value in secret_values:
        assert value not in report and all(value not in f for f in result.findings)
