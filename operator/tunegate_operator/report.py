"""The gate's report: an HTML page with PNG plots, stored next to the results.

Pure rendering (rows in, bytes out); the caller uploads. One plot per suite shows
base and candidate scores and the delta's interval against the margin.
"""

from __future__ import annotations

import html
import io
from collections.abc import Mapping, Sequence
from typing import Any

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


def _plot(row: Mapping[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (scores, delta) = plt.subplots(1, 2, figsize=(7, 2.6), dpi=100)
    if row.get("base") is not None:
        scores.bar(
            ["base", "candidate"], [row["base"], row["candidate"]], color=["#8c959f", "#0969da"]
        )
    else:
        scores.bar(["candidate"], [row["candidate"]], color=["#0969da"])
    scores.set_title(f"{row['suite']} ({row['metric']})")
    low, high = row["interval"]["low"], row["interval"]["high"]
    delta.errorbar(
        [row["delta"]],
        [0],
        xerr=[[row["delta"] - low], [high - row["delta"]]],
        fmt="o",
        color="#0969da",
        capsize=6,
    )
    margin = row["threshold"] if row["role"] in ("target", "drift") else -row["threshold"]
    delta.axvline(margin, color="#cf222e", linestyle="--", label="margin")
    delta.set_yticks([])
    delta.set_title(f"{'KL' if row['role'] == 'drift' else 'delta'}: {row['verdict']}")
    delta.legend(loc="upper right", fontsize=7)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


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
    images = {f"{row['suite']}.png": _plot(row) for row in rows}
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
