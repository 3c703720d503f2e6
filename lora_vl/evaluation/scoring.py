"""Answer extraction for helpfulness benchmarks, without an API judge.

Multiple choice: a leading option letter ('B', 'B.', '(B)', 'Answer: B'), else the one option
whose text appears in the answer. Yes/no: the first 'yes' or 'no' word. Open VQA (items with
meta['answers']): exact match of the normalised answer with any reference answer (the VQA
normalisation: lower case, punctuation and articles dropped, number words as digits). Nothing
found -> None, scored wrong and counted as unparsed.
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


NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten".split())} | {"none": "0"}
ARTICLES = {"a", "an", "the"}


def normalize_answer(text: str) -> str:
    """VQA-style normalisation for exact match."""
    text = re.sub(r"(?<=\d),(?=\d)", "", text.lower().replace("\u2019", "'"))
    words = re.sub(r"[^\w\s']", " ", text).split()
    return " ".join(NUMBER_WORDS.get(w, w) for w in words if w not in ARTICLES)


def exact_match(answer: str, references: list[str]) -> bool:
    pred = normalize_answer(answer)
    return pred in {normalize_answer(r) for r in references}


def score_item(item: EvalItem, answer: str) -> tuple[bool, bool]:
    """(correct, parsed) for one helpfulness item."""
    if "answers" in item.meta:
        return exact_match(answer, item.meta["answers"]), bool(normalize_answer(answer))
    if item.choices:
        pred = extract_letter(answer, item.choices)
    else:
        pred = extract_yes_no(answer)
    return pred is not None and pred == item.reference, pred is not None


def scorer_name(item: EvalItem) -> str:
    if "answers" in item.meta:
        return "match:exact"
    return "match:letter" if item.choices else "match:yes/no"
