"""Open-ended VQA scored by exact match: the lmms-lab VQAv2 / TextVQA layouts.

- lmms-lab/VQAv2: question_id, question, question_type, answers [{answer, answer_confidence,
  answer_id}] (10 human answers), multiple_choice_answer, answer_type, image_id, image.
- lmms-lab/textvqa: question_id, question, answers [str] (10), image, image_id, ocr_tokens, ...
A row without an image is a text-only question (e.g. the toy world's benign text QA). The prompt
is LLaVA-1.5's VQAv2 prompt (question + short-answer instruction); the reference answers go to
`meta['answers']`, which `lora_vl.evaluation.scoring` matches exactly after VQA normalisation.
"""
from __future__ import annotations

from lora_vl.evaluation.items import BenchmarkError, EvalItem
from lora_vl.evaluation.readers.prompts import SHORT_INSTRUCTION
from lora_vl.evaluation.readers.registry import benchmark_reader
from lora_vl.evaluation.readers.source import load_rows, row_image


def _answers(row: dict, benchmark: str, i: int) -> list[str]:
    raw = row.get("answers")
    if isinstance(raw, list) and raw:
        return [str(a["answer"] if isinstance(a, dict) else a) for a in raw]
    if row.get("multiple_choice_answer"):
        return [str(row["multiple_choice_answer"])]
    raise BenchmarkError(f"{benchmark}: row {i} has no 'answers' list and no 'multiple_choice_answer'")


@benchmark_reader("vqa", category="helpfulness", help="open VQA by exact match (lmms-lab VQAv2 / TextVQA layouts)")
def read_vqa(spec) -> list[EvalItem]:
    rows, folder = load_rows(spec, spec.name, ["*.parquet", "*.jsonl", "*.json"],
                             split=spec.split or "validation")
    items = []
    for i, r in enumerate(rows):
        if "question" not in r:
            raise BenchmarkError(f"{spec.name}: row {i} has no 'question' column; got {sorted(r)}")
        image = row_image(r, folder) if r.get("image") is not None else None
        answers = _answers(r, spec.name, i)
        items.append(EvalItem(id=str(r.get("question_id", i)), prompt=f"{r['question']}\n{SHORT_INSTRUCTION}",
                              image=image, benchmark=spec.name,
                              category=str(r.get("question_type") or r.get("answer_type") or ""),
                              reference=answers[0], meta={"answers": answers}))
    return items
