"""An eval suite's items, checked against what its metric reads before any model loads:
a malformed item stops the run with its file:line, the key and what was wrong (pure)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from tunegate_contract.eval_config import Suite
from tunegate_trainer.data import DataError, Row


def _text(value: Any) -> str | None:
    return None if isinstance(value, str) and value.strip() else "a non-empty string"


def _choices(value: Any) -> str | None:
    ok = isinstance(value, list) and len(value) >= 2 and all(isinstance(c, str) for c in value)
    return None if ok else "a list of at least two strings"


def _flag(value: Any) -> str | None:
    return None if isinstance(value, bool) else "true or false"


def _scalar(value: Any) -> str | None:
    ok = isinstance(value, (str, int, float)) and not isinstance(value, bool)
    return None if ok else "a string or a number"


def _index(value: Any) -> str | None:
    ok = (isinstance(value, int) and not isinstance(value, bool)) or (
        isinstance(value, str) and value.isdigit()
    )
    return None if ok else "the index of the right choice (0, 1, ...)"


# metric -> key -> check (None when the value will do, else what it must be)
FIELDS: dict[str, dict[str, Callable[[Any], str | None]]] = {
    "multipleChoiceAccuracy": {"question": _text, "choices": _choices, "answer": _index},
    "exactMatch": {"prompt": _text, "answer": _scalar},
    "refusal": {"prompt": _text, "harmful": _flag},
    "perplexity": {"text": _text},
    "kl": {"prompt": _text},
}


def item_problem(metric: str, item: dict[str, Any], *, group_by: str | None = None) -> str:
    """'' when the metric can score the item, else what is wrong with it."""
    for key, check in FIELDS[metric].items():
        if key not in item:
            return f"no {key!r} (metric {metric} reads {', '.join(FIELDS[metric])})"
        wanted = check(item[key])
        if wanted:
            return f"{key!r} must be {wanted}, not {type(item[key]).__name__}"
    if metric == "multipleChoiceAccuracy" and int(item["answer"]) >= len(item["choices"]):
        return f"'answer' {item['answer']} is past the last of {len(item['choices'])} choices"
    if group_by is not None and group_by not in item:
        return f"no {group_by!r} (the suite's groupBy)"
    return ""


def checked_items(suite: Suite, rows: Iterable[Row | DataError]) -> list[dict[str, Any]]:
    """The suite's items (up to maxItems), each one its metric can score."""
    items: list[dict[str, Any]] = []
    for row in rows:
        if isinstance(row, DataError):
            raise DataError(f"suite {suite.name}: {row}")
        problem = item_problem(suite.metric, row.value, group_by=suite.group_by)
        if problem:
            raise DataError(f"suite {suite.name}: {row.where}: {problem}")
        items.append(row.value)
        if suite.max_items and len(items) >= suite.max_items:
            break
    if not items:
        raise DataError(f"suite {suite.name}: {suite.dataset} has no items")
    return items
