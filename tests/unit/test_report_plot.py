"""The report's SVG plot: well-formed, and drawn where the numbers say."""

from __future__ import annotations

from typing import Any
from xml.etree import ElementTree

from tunegate_operator.report_plot import suite_plot

SVG = "{http://www.w3.org/2000/svg}"


def row(**fields: Any) -> dict[str, Any]:
    base = {
        "suite": "general",
        "role": "retention",
        "metric": "accuracy",
        "base": 0.62,
        "candidate": 0.58,
        "delta": -0.04,
        "interval": {"low": -0.07, "high": -0.03},
        "threshold": 0.02,
        "verdict": "Fail",
    }
    return base | fields


def shapes(svg: bytes, tag: str, cls: str) -> list[ElementTree.Element]:
    root = ElementTree.fromstring(svg)
    return [e for e in root.iter(f"{SVG}{tag}") if e.get("class") == cls]


def test_the_delta_sits_inside_its_interval_and_a_retention_margin_at_minus_threshold() -> None:
    # retention compares the interval with -threshold (-0.02): here all of it lies above
    svg = suite_plot(row(delta=0.005, interval={"low": -0.01, "high": 0.015}, verdict="Pass"))
    (point,) = shapes(svg, "circle", "delta")
    low_cap, high_cap = sorted(float(c.get("x1", "nan")) for c in shapes(svg, "line", "cap"))
    (margin,) = shapes(svg, "line", "margin")
    assert float(margin.get("x1", "nan")) < low_cap < float(point.get("cx", "nan")) < high_cap


def test_target_and_drift_margins_are_drawn_at_plus_threshold() -> None:
    for role in ("target", "drift"):
        svg = suite_plot(
            row(role=role, delta=0.05, interval={"low": 0.03, "high": 0.07}, threshold=0.1)
        )
        (point,) = shapes(svg, "circle", "delta")
        (margin,) = shapes(svg, "line", "margin")
        assert float(point.get("cx", "nan")) < float(margin.get("x1", "nan")), role


def test_bars_are_proportional_to_the_scores() -> None:
    bars = {b.get("data-label"): b for b in shapes(suite_plot(row()), "rect", "bar")}
    heights = {label: float(bar.get("height", "nan")) for label, bar in bars.items()}
    assert abs(heights["candidate"] / heights["base"] - 0.58 / 0.62) < 0.01


def test_a_drift_row_without_a_base_and_odd_names_still_make_a_valid_document() -> None:
    svg = suite_plot(row(suite='a<b>&"c"', role="drift", base=None, metric="kl"))
    bars = shapes(svg, "rect", "bar")
    assert [b.get("data-label") for b in bars] == ["candidate"]
    texts = "".join(t.text or "" for t in ElementTree.fromstring(svg).iter(f"{SVG}text"))
    assert 'a<b>&"c" (kl)' in texts


def test_non_finite_numbers_are_left_out_rather_than_drawn_at_nan() -> None:
    svg = suite_plot(row(base=float("nan"), delta=float("inf")))
    assert b"nan" not in svg and b"inf" not in svg
    assert shapes(svg, "circle", "delta") == []
