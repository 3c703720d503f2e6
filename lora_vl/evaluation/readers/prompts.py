"""The LLaVA-1.5 evaluation prompt pieces (its docs/Evaluation.md) that several readers share: the
option-letter line for multiple choice and the short-answer line for yes/no and open VQA."""
from __future__ import annotations

import string

MC_INSTRUCTION = "Answer with the option's letter from the given choices directly."
SHORT_INSTRUCTION = "Answer the question using a single word or phrase."
LETTERS = string.ascii_uppercase


def present(v) -> bool:
    """Whether a cell holds a value (TSV/CSV cells read as '' or 'nan' when empty)."""
    return v is not None and str(v).strip() not in ("", "nan", "None")


def mc_prompt(question: str, choices: list[str], hint: str | None = None) -> str:
    lines = [hint.strip()] if present(hint) else []
    lines.append(question.strip())
    lines += [f"{LETTERS[i]}. {c}" for i, c in enumerate(choices)]
    lines.append(MC_INSTRUCTION)
    return "\n".join(lines)
