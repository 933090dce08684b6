"""The gate's report: an HTML page with SVG plots, stored next to the results.

Pure rendering (rows in, bytes out); the caller uploads. One plot per suite shows
base and candidate scores and the delta's interval against the margin.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

from .report_plot import suite_plot

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tunegate gate {name}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
table {{ border-collapse: collapse; margin: 1rem 0; }}
th, td {{ border: 1px solid #ccc; padding: .3rem .6rem; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
.Pass {{ color: #1a7f37; }} .Fail {{ color: #cf222e; }} .Inconclusive {{ color: #9a6700; }}
img {{ max-width: 32rem; margin: .5rem 1rem .5rem 0; }}
</style></head><body>
<h1>EvalGate {name}: <span class="{verdict}">{verdict}</span></h1>
<p>{reason}</p>
<p>Candidate: {candidate}<br>Base model: {base}<br>Confidence: {confidence}</p>
<table><tr><th>suite</th><th>role</th><th>metric</th><th>base</th><th>candidate</th>
<th>delta</th><th>interval</th><th>threshold</th><th>verdict</th><th>items</th>
<th>detectable</th><th>method</th></tr>
{rows}
</table>
{plots}
{loss}
</body></html>
"""


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def _method(row: Mapping[str, Any]) -> str:
    method = str(row.get("method") or "")
    if row.get("clusters") is not None:
        method += f", {row['clusters']} clusters"
    if row.get("itemsNeeded") is not None:
        method += f"; about {row['itemsNeeded']} items would decide"
    return method


def render(
    *,
    name: str,
    rows: Sequence[Mapping[str, Any]],
    decision: Mapping[str, Any],
    candidate: str,
    base: str,
    confidence: float,
    loss_curve: str | None,
) -> tuple[str, dict[str, bytes]]:
    images = {f"{row['suite']}.svg": suite_plot(row) for row in rows}
    escape = html.escape
    table = "\n".join(
        f"<tr><td>{escape(r['suite'])}</td><td>{r['role']}</td><td>{r['metric']}</td>"
        f"<td>{_number(r.get('base'))}</td>"
        f"<td>{r['candidate']:.4f}</td><td>{r['delta']:+.4f}</td>"
        f"<td>[{r['interval']['low']:+.4f}, {r['interval']['high']:+.4f}]</td>"
        f'<td>{r["threshold"]}</td><td class="{r["verdict"]}">{r["verdict"]}</td>'
        f"<td>{r['items']}</td><td>{_number(r.get('minimumDetectableDifference'))}</td>"
        f"<td>{escape(_method(r))}</td></tr>"
        for r in rows
    )
    plots = "".join(f'<img src="{escape(file)}" alt="{escape(file)}">' for file in images)
    loss = '<h2>Training loss</h2><img src="loss.png" alt="training loss">' if loss_curve else ""
    page = PAGE.format(
        name=escape(name),
        verdict=escape(str(decision.get("verdict", ""))),
        reason=escape(str(decision.get("reason", ""))),
        candidate=escape(candidate),
        base=escape(base),
        confidence=confidence,
        rows=table,
        plots=plots,
        loss=loss,
    )
    return page, images
