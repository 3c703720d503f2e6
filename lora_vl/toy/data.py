"""Write every data file of the toy world (no models): LM corpus and alignment chats, LLaVA
stage-1/2 data, safety data, benchmarks, the judge's knowledge and the split.

Training files use training cells only and benchmarks held-out cells only; the ledger of
cells actually written is checked before anything is returned (`Split.check`).
"""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

from lora_vl.toy import lexicon as L
from lora_vl.toy.benchmarks import knowledge, write_benchmarks
from lora_vl.toy.safety_data import pku_saferlhf, spa_vl, vlguard_train
from lora_vl.toy.scale import Scale
from lora_vl.toy.space import Ledger, make_split
from lora_vl.toy.text_data import alignment_chats, pretrain_docs, split_benign
from lora_vl.toy.vl_data import (Painter, described_image_chats, stage1_captions, stage2_instructions,
                                 visual_cells)

# what write_world_data returns, relative to the world folder
FILES = {"pretrain": "data/pretrain.json", "instruct": "data/instruct.json", "lm_corpus": "data/lm_corpus.jsonl",
         "lm_align": "data/lm_align.json", "vlguard": "safety/vlguard_train.json", "spa_vl": "safety/spa_vl.json",
         "pku_saferlhf": "safety/pku_saferlhf.json", "knowledge": "judge/knowledge.json", "splits": "splits.json"}


def _cap(items: list, n: int | None, rng: random.Random) -> list:
    return items if n is None or len(items) <= n else rng.sample(items, n)


def _dump(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1))


def write_world_data(out: str | Path, scale: Scale, seed: int = 0) -> dict[str, Path]:
    """All data files under `out` (a fresh or empty folder); returns {name: path} (see FILES)."""
    out = Path(out)
    split, ledger = make_split(seed), Ledger()
    rng = lambda name: random.Random(f"{seed}-{name}")  # noqa: E731  (one stream per file: stable under edits)
    files = {k: out / v for k, v in FILES.items()}

    # the LM's text: pretraining documents (plain text or chat messages) and alignment chats
    docs = pretrain_docs(split, ledger, rng("corpus"), render_chat=lambda m: {"messages": m})
    docs = _cap(docs, scale.max_text, rng("corpus-cap"))
    files["lm_corpus"].parent.mkdir(parents=True, exist_ok=True)
    files["lm_corpus"].write_text("".join(json.dumps(d if isinstance(d, dict) else {"text": d}) + "\n" for d in docs))
    chats = alignment_chats(split, ledger, rng("align")) + described_image_chats(split, ledger, rng("described"))
    rng("align-order").shuffle(chats)
    align, benign_chats = split_benign(_cap(chats, scale.max_text, rng("align-cap")))
    _dump(files["lm_align"], align)

    # VL data: training pictures of every object (neutral captions), typography of every activity
    r = rng("pictures")
    obj_specs = visual_cells(split, ledger, L.OBJECTS, held_out=False) * scale.images_per_cell
    text_specs = []
    for t in L.TOPICS.values():
        for col in split.columns("typo", t.act):
            ledger.use(("typo", t.act, col), held_out=False)
            text_specs += [(t.act, int(col))] * scale.images_per_cell
    painter = Painter(out / "data", "images", r)
    obj_pics = [painter.objects(*s) for s in _cap(obj_specs, scale.max_stage1, r)]
    text_pics = [painter.text(*s) for s in _cap(text_specs, scale.max_stage1, r)]
    _dump(files["pretrain"], _cap(stage1_captions(obj_pics + text_pics, rng("captions")), scale.max_stage1, r))
    harmful = {o.name for o in L.HARMFUL_OBJECTS}
    benign_obj = [p for p in obj_pics if p.obj not in harmful]
    benign_text = [p for p in text_pics if not L.TOPICS[p.act].harmful]
    seen = [p for p in obj_pics if p.obj in harmful] + [p for p in text_pics if L.TOPICS[p.act].harmful]
    instruct = stage2_instructions(benign_obj, benign_text, seen, split, ledger,
                                   _cap(benign_chats, len(align) // 6, r), rng("instruct"), per_image=3)
    _dump(files["instruct"], _cap(instruct, scale.max_stage2, r))

    # safety data: its own pictures of harmful (unsafe) and benign (safe) objects
    sp = Painter(out / "safety", "images", rng("safety-pictures"))
    s_specs = []
    for o in L.OBJECTS:
        s_specs += _cap(visual_cells(split, ledger, [o], held_out=False), scale.safety_pics_per_object, r)
    s_pics = [sp.objects(*s) for s in s_specs]
    unsafe = {o.name: [p for p in s_pics if p.obj == o.name] for o in L.HARMFUL_OBJECTS}
    safe = {o.name: [p for p in s_pics if p.obj == o.name] for o in L.BENIGN_OBJECTS}
    safe_list = [p for ps in safe.values() for p in ps]
    _dump(files["vlguard"], _cap(vlguard_train(unsafe, safe_list, split, ledger, rng("vlguard")), scale.max_safety, r))
    _dump(files["spa_vl"], _cap(spa_vl(unsafe, safe, split, ledger, rng("spa_vl")), scale.max_safety, r))
    _dump(files["pku_saferlhf"], _cap(pku_saferlhf(split, ledger, rng("pku")), scale.max_safety, r))

    # benchmarks (held-out cells) and the judge's knowledge
    bench = write_benchmarks(out / "benchmarks", split, ledger, seed, scale.bench_n, out / ".bench_images")
    shutil.rmtree(out / ".bench_images", ignore_errors=True)
    _dump(files["knowledge"], knowledge())
    split.check(ledger.train, ledger.eval)
    _dump(files["splits"], {**split.as_json(), "used": {"train": len(ledger.train), "held_out": len(ledger.eval)}})
    return {**files, **{f"bench_{k}": v for k, v in bench.items()}}


def corpus_texts(files: dict[str, Path]) -> list[str]:
    """Every training text of the world (for the tokenizer): documents, chats, captions, safety data."""
    texts = []
    for line in files["lm_corpus"].read_text().splitlines():
        d = json.loads(line)
        texts += [d["text"]] if "text" in d else [m["content"] for m in d["messages"]]
    for key in ("lm_align", "pretrain", "instruct"):
        for rec in json.loads(files[key].read_text()):
            texts += [t["value"].replace("<image>\n", "") for t in rec["conversations"]]
    for rec in json.loads(files["vlguard"].read_text()):
        texts += [v for e in rec["instr-resp"] for v in e.values()]
    return texts
