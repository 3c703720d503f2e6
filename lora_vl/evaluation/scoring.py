"""Answer extraction for helpfulness benchmarks, without an API judge.

Multiple choice: a leading option letter ('B', 'B.', '(B)', 'Answer: B'), else the one option
whose text appears in the answer. Yes/no: the first 'yes' or 'no' word. Nothing found -> None,
scored wrong and counted as unparsed.
"""
from __future__ import annotations

import re

from lora_vl.evaluation.items import EvalItem

LETTERS = "ABCDEFGH"


def extract_letter(answer: str, choices: list[str]) -> str | None:
    valid = LETTERS[:len(choices)]
    text = answer.strip()
    m = re.match(rf"^\(?([{valid}])(?:[).:\s]|$)", text)
    if m is None:
        m = re.search(rf"\b(?:answer|option)(?: is)?\s*:?\s*\(?([{valid}])\b", text, flags=re.IGNORECASE)
    if m is not None:
        return m.group(1).upper()
    hits = [LETTERS[i] for i, c in enumerate(choices) if c and c.lower() in text.lower()]
    return hits[0] if len(hits) == 1 else None


def extract_yes_no(answer: str) -> str | None:
    m = re.search(r"\b(yes|no)\b", answer.lower())
    return m.group(1) if m else None


def score_item(item: EvalItem, answer: str) -> tuple[bool, bool]:
    """(correct, parsed) for one helpfulness item."""
    if item.choices:
        pred = extract_letter(answer, item.choices)
    else:
        pred = extract_yes_no(answer)
    return pred is not None and pred == item.reference, pred is not None


def scorer_name(item: EvalItem) -> str:
    return "match:letter" if item.choices else "match:yes/no"
