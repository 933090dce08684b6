"""One suite's plot for the gate's report, as SVG text.

Left: base and candidate scores as bars. Right: the delta (KL for drift) with its
interval, against the margin. Written by hand rather than with matplotlib, which
cost the operator about 45 MiB of memory for two small charts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any
from xml.sax.saxutils import escape, quoteattr

WIDTH, HEIGHT = 700, 260
PANEL_WIDTH = 330
RIGHT_PANEL_X = 360
PLOT_TOP, PLOT_BOTTOM = 45, 215
INSET = 30
GREY, BLUE, RED, INK = "#8c959f", "#0969da", "#cf222e", "#222"


def suite_plot(row: Mapping[str, Any]) -> bytes:
    """The SVG document for one result row (as the gate's status holds it)."""
    elements = _scores_panel(row) + _interval_panel(row)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">'
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>' + "".join(elements) + "</svg>"
    ).encode()


def _finite(values: Sequence[Any]) -> list[float]:
    return [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]


def _span(values: Sequence[float], pad: float) -> tuple[float, float]:
    """The range to draw: every value inside, with `pad` of the width either side."""
    low, high = min(values), max(values)
    if high == low:
        return low - 1.0, high + 1.0
    margin = (high - low) * pad
    return low - margin, high + margin


def _ticks(low: float, high: float, about: int = 5) -> list[float]:
    """Round tick values (steps of 1, 2 or 5 times a power of ten) inside [low, high]."""
    raw = (high - low) / about
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(low / step)
    return [round(k * step, 12) for k in range(first, math.floor(high / step) + 1)]


def _text(x: float, y: float, content: str, anchor: str = "middle", **attrs: str) -> str:
    extra = "".join(f" {key.replace('_', '-')}={quoteattr(v)}" for key, v in attrs.items())
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{extra}>{escape(content)}</text>'


def _scores_panel(row: Mapping[str, Any]) -> list[str]:
    bars = [("base", row.get("base"), GREY), ("candidate", row.get("candidate"), BLUE)]
    shown = [(label, value, color) for label, v, color in bars for value in _finite([v])]
    title = f"{row['suite']} ({row['metric']})"
    elements = [_text(PANEL_WIDTH / 2, 20, title, font_weight="bold")]
    if not shown:
        return [*elements, _text(PANEL_WIDTH / 2, HEIGHT / 2, "no finite score")]
    low, high = min(0.0, *(v for _, v, _ in shown)), max(0.0, *(v for _, v, _ in shown))
    if high == low:
        high = low + 1.0

    def y(value: float) -> float:
        return PLOT_BOTTOM - (value - low) / (high - low) * (PLOT_BOTTOM - PLOT_TOP)

    slot = (PANEL_WIDTH - 2 * INSET) / len(shown)
    for index, (label, value, color) in enumerate(shown):
        left = INSET + index * slot + slot * 0.2
        top, bottom = sorted((y(value), y(0.0)))
        elements.append(
            f'<rect class="bar" data-label="{label}" x="{left:.1f}" y="{top:.1f}" '
            f'width="{slot * 0.6:.1f}" height="{bottom - top:.1f}" fill="{color}"/>'
        )
        elements.append(_text(left + slot * 0.3, top - 4, f"{value:.4g}"))
        elements.append(_text(left + slot * 0.3, PLOT_BOTTOM + 18, label))
    elements.append(
        f'<line x1="{INSET}" y1="{y(0.0):.1f}" x2="{PANEL_WIDTH - INSET}" '
        f'y2="{y(0.0):.1f}" stroke="{INK}"/>'
    )
    return elements


def _interval_panel(row: Mapping[str, Any]) -> list[str]:
    drift = row["role"] == "drift"
    # The margin as the verdict reads it: KL and target deltas are compared with
    # +threshold, retention and safety deltas with -threshold.
    margin = row["threshold"] if row["role"] in ("target", "drift") else -row["threshold"]
    interval = row.get("interval") or {}
    ends = _finite([interval.get("low"), interval.get("high")])
    deltas, margins = _finite([row.get("delta")]), _finite([margin])
    left, right = RIGHT_PANEL_X + INSET, RIGHT_PANEL_X + PANEL_WIDTH - INSET
    title = f"{'KL' if drift else 'delta'}: {row['verdict']}"
    elements = [_text(RIGHT_PANEL_X + PANEL_WIDTH / 2, 20, title, font_weight="bold")]
    span_low, span_high = _span([*ends, *deltas, *margins, 0.0], pad=0.1)

    def x(value: float) -> float:
        return left + (value - span_low) / (span_high - span_low) * (right - left)

    axis_y, point_y = PLOT_BOTTOM, (PLOT_TOP + PLOT_BOTTOM) / 2
    elements.append(f'<line x1="{left}" y1="{axis_y}" x2="{right}" y2="{axis_y}" stroke="{INK}"/>')
    for tick in _ticks(span_low, span_high):
        elements.append(
            f'<line x1="{x(tick):.1f}" y1="{axis_y}" x2="{x(tick):.1f}" '
            f'y2="{axis_y + 5}" stroke="{INK}"/>'
        )
        elements.append(_text(x(tick), axis_y + 18, f"{tick:.3g}"))
    for value in margins:
        elements.append(
            f'<line class="margin" x1="{x(value):.1f}" y1="{PLOT_TOP}" x2="{x(value):.1f}" '
            f'y2="{axis_y}" stroke="{RED}" stroke-dasharray="5,4"/>'
        )
        elements.append(_text(x(value), PLOT_TOP - 6, "margin", fill=RED))
    if len(ends) == 2:
        low, high = ends
        for end in ends:
            elements.append(
                f'<line class="cap" x1="{x(end):.1f}" y1="{point_y - 8}" x2="{x(end):.1f}" '
                f'y2="{point_y + 8}" stroke="{BLUE}" stroke-width="2"/>'
            )
        elements.append(
            f'<line class="interval" x1="{x(low):.1f}" y1="{point_y}" x2="{x(high):.1f}" '
            f'y2="{point_y}" stroke="{BLUE}" stroke-width="2"/>'
        )
    for delta in deltas:
        elements.append(
            f'<circle class="delta" cx="{x(delta):.1f}" cy="{point_y}" r="5" fill="{BLUE}"/>'
        )
    return elements
