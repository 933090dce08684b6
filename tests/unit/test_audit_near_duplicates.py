"""Near-duplicate recall on light rewording, and what the same setting flags on clean
data, measured on standard-library docstring Q&A (held apart from the seeds the
setting was chosen on)."""

from __future__ import annotations

import random

import pytest

from tunegate_cluster.audit_data import docstring_qa, reword
from tunegate_trainer.audit.near_duplicates import duplicates

COPIES = 200


@pytest.mark.parametrize("seed", [31, 32, 33])
def test_light_rewording_is_found_and_clean_rows_mostly_are_not(seed: int) -> None:
    clean = [f"{pair.prompt}\n{pair.response}" for pair in docstring_qa(1500, seed)]
    clean_exact, clean_near = duplicates(clean)
    assert clean_exact == 0
    rng = random.Random(seed)
    copies = [
        text.split("\n")[0] + "\n" + reword(text.split("\n", 1)[1], rng)
        for text in rng.sample(clean, COPIES)
    ]
    exact, near = duplicates(clean + copies)
    # A copy whose rewording only touched case and punctuation is an exact duplicate.
    recall = (exact + near - clean_near) / COPIES
    print(f"seed {seed}: recall {recall:.1%}, clean rows flagged {clean_near / len(clean):.1%}")
    assert recall >= 0.9
    # Sibling docstrings ("Return True if x is finite/signed...") are textual near
    # duplicates; anything beyond a few percent would be the setting, not the data.
    assert clean_near / len(clean) <= 0.03


def test_exact_duplicates_ignore_case_spacing_and_punctuation() -> None:
    texts = ["Return the sum of a and b.", "return  the SUM of a and b", "Something else entirely."]
    assert duplicates(texts) == (1, 0)


def test_a_different_text_sharing_few_words_is_not_a_near_duplicate() -> None:
    texts = [
        "Open the file and return a stream for reading its bytes from disk.",
        "Close every socket in the pool before the event loop stops running.",
    ]
    assert duplicates(texts) == (0, 0)
