"""Near-duplicate recall on light rewording, and what the same setting flags on clean
data, measured on standard-library docstring Q&A (held apart from the seeds the
setting was chosen on)."""

from __future__ import annotations

import random

import pytest

from tunegate_cluster.audit_data import docstring_qa, reword
from tunegate_trainer.audit.near_duplicates import DuplicateFinder, duplicates

COPIES = 200


@pytest.mark.parametrize("seed", [31, 32, 33])
def test_light_rewording_is_found_and_clean_rows_mostly_are_not(seed: int) -> None:
    clean = docstring_qa(1500, seed)
    finder = DuplicateFinder()
    for index, pair in enumerate(clean):
        finder.offer(f"clean:{index}", f"{pair.prompt}\n{pair.response}")
    clean_flagged = finder.near
    assert finder.exact == 0
    rng = random.Random(seed)
    for copy, index in enumerate(rng.sample(range(len(clean)), COPIES)):
        pair = clean[index]
        finder.offer(f"copy:{copy}", f"{pair.prompt}\n{reword(pair.response, rng)}")
    # A copy whose rewording only touched case and punctuation is an exact duplicate.
    recall = (finder.exact + finder.near - clean_flagged) / COPIES
    print(f"seed {seed}: recall {recall:.1%}, clean rows flagged {clean_flagged / len(clean):.1%}")
    assert recall >= 0.9
    # Sibling docstrings ("Return True if x is finite/signed...") are textual near
    # duplicates; anything beyond a few percent would be the setting, not the data.
    assert clean_flagged / len(clean) <= 0.03


def test_exact_duplicates_ignore_case_spacing_and_punctuation() -> None:
    texts = ["Return the sum of a and b.", "return  the SUM of a and b", "Something else entirely."]
    assert duplicates(texts) == (1, 0)


def test_a_different_text_sharing_few_words_is_not_a_near_duplicate() -> None:
    texts = [
        "Open the file and return a stream for reading its bytes from disk.",
        "Close every socket in the pool before the event loop stops running.",
    ]
    assert duplicates(texts) == (0, 0)
