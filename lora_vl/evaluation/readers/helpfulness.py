"""Helpfulness benchmarks scored without an API judge: MMBench, MME, SEED-Bench, POPE, ScienceQA-IMG.

Prompts follow the LLaVA-1.5 evaluation prompts (docs/Evaluation.md: the option letter for
multiple choice, a single word or phrase for short answers such as MME and POPE), which the
scorers in `lora_vl.evaluation.scoring` parse.
"""
from __future__ import annotations

from lora_vl.evaluation.items import EvalItem
from lora_vl.evaluation.readers.prompts import LETTERS, SHORT_INSTRUCTION, mc_prompt, present
from lora_vl.evaluation.readers.registry import benchmark_reader
from lora_vl.evaluation.readers.source import load_rows, row_image


@benchmark_reader("mmbench", category="helpfulness", help="MMBench-EN dev (hub or TSV with base64 images)")
def read_mmbench(spec) -> list[EvalItem]:
    """MMBench (lmms-lab/MMBench 'en' dev, or the mmbench_dev_en.tsv with base64 images):
    index, question, hint, A..D, answer, category, image."""
    rows, folder = load_rows(spec, spec.name, ["mmbench_dev_en.tsv", "*.tsv", "*.parquet"],
                             config=spec.config or "en", split=spec.split or "dev")
    items = []
    for r in rows:
        choices = [str(r[L]) for L in "ABCDEFGH" if L in r and present(r[L])]
        items.append(EvalItem(id=str(r["index"]), prompt=mc_prompt(r["question"], choices, r.get("hint")),
                              image=row_image(r, folder), benchmark=spec.name, category=str(r.get("category", "")),
                              reference=str(r["answer"]).strip().upper(), choices=choices))
    return items


@benchmark_reader("mme", category="helpfulness", help="MME yes/no (lmms-lab/MME layout); adds acc+ and the MME score")
def read_mme(spec) -> list[EvalItem]:
    """lmms-lab/MME: question_id (the image name), image, question ('... Please answer yes or no.'),
    answer (Yes/No), category. Two questions per image; meta['group'] pairs them for acc+. The
    prompt adds LLaVA-1.5's short-answer line, as its MME evaluation does."""
    rows, folder = load_rows(spec, spec.name, ["*.parquet", "*.jsonl", "*.json"])
    seen: dict[str, int] = {}
    items = []
    for r in rows:
        group = f"{r['category']}/{r['question_id']}"
        k = seen[group] = seen.get(group, -1) + 1
        items.append(EvalItem(id=f"{group}#{k}", prompt=f"{r['question']}\n{SHORT_INSTRUCTION}",
                              image=row_image(r, folder),
                              benchmark=spec.name, category=str(r["category"]),
                              reference=str(r["answer"]).strip().lower(), meta={"group": group}))
    return items


@benchmark_reader("seedbench", category="helpfulness", help="SEED-Bench image questions (lmms-lab layout)")
def read_seedbench(spec) -> list[EvalItem]:
    """lmms-lab/SEED-Bench: question_id, question, choice_a..choice_d, answer (letter), data_type,
    question_type_id, image (list). Only image items are kept (video items need frames)."""
    rows, folder = load_rows(spec, spec.name, ["*.parquet", "*.jsonl", "*.json"])
    items = []
    for r in rows:
        if r.get("data_type", "image") != "image":
            continue
        choices = [str(r[f"choice_{c}"]) for c in "abcd"]
        items.append(EvalItem(id=str(r["question_id"]), prompt=mc_prompt(r["question"], choices),
                              image=row_image(r, folder), benchmark=spec.name,
                              category=str(r.get("question_type_id", "")),
                              reference=str(r["answer"]).strip().upper(), choices=choices))
    return items


@benchmark_reader("pope", category="helpfulness", help="POPE yes/no (lmms-lab layout)")
def read_pope(spec) -> list[EvalItem]:
    """lmms-lab/POPE: question_id, question, answer (yes/no), image_source, image, category."""
    rows, folder = load_rows(spec, spec.name, ["*.parquet", "*.jsonl", "*.json"])
    return [EvalItem(id=str(r["question_id"]), prompt=f"{r['question']}\n{SHORT_INSTRUCTION}",
                     image=row_image(r, folder), benchmark=spec.name, category=str(r.get("category", "")),
                     reference=str(r["answer"]).strip().lower())
            for r in rows]


@benchmark_reader("scienceqa", category="helpfulness", help="ScienceQA-IMG (lmms-lab layout)")
def read_scienceqa(spec) -> list[EvalItem]:
    """lmms-lab/ScienceQA 'ScienceQA-IMG': image, question, choices (list), answer (index), hint,
    subject, ... Rows without an image are dropped (the IMG subset)."""
    rows, folder = load_rows(spec, spec.name, ["*.parquet", "*.jsonl", "*.json"],
                             config=spec.config or "ScienceQA-IMG")
    items = []
    for i, r in enumerate(rows):
        if r.get("image") is None:
            continue
        choices = [str(c) for c in r["choices"]]
        hint = f"Context: {r['hint']}" if present(r.get("hint")) else None
        items.append(EvalItem(id=str(r.get("id", i)), prompt=mc_prompt(r["question"], choices, hint),
                              image=row_image(r, folder), benchmark=spec.name, category=str(r.get("subject", "")),
                              reference=LETTERS[int(r["answer"])], choices=choices))
    return items
