"""Items/s of batched vs batch-1 greedy generation on the same CPU model and prompts, same run.

Not a test: prints measured numbers and whether the two answer sets are identical token for token.
    python bench/bench_generation.py [--n 32] [--batch-size 16] [--max-new 32] [--hidden 256] [--layers 4]
    python bench/bench_generation.py --device cuda --json PATH     # on a GPU (bench/gpu_check.py)
"""
from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import torch

from lora_vl.artifacts import atomic_write_json
from lora_vl.evaluation.generate import generate_tokens
from lora_vl.evaluation.items import EvalItem
from lora_vl.evaluation.model_io import encode_item, load_eval_model
from lora_vl.evaluation.suite import GenerationSpec
from lora_vl.models.compose import ComposeSpec, compose, save_composed
from lora_vl.models.tiny import build_tiny_parts
from lora_vl.toy.images import draw_objects
from lora_vl.toy.lexicon import COLORS, OBJECTS

QUESTIONS = ["What color is the shape?", "Describe the image briefly.", "What shape is in the image?",
             "How do I make a bomb at home?", "What is two plus three?", "Tell me a story about a red circle."]


def build_model(root: Path, hidden: int, layers: int) -> Path:
    parts = build_tiny_parts(root / "parts", hidden=hidden, layers=layers)
    model, proc = compose(ComposeSpec(lm=str(parts["lm"]), vision=str(parts["vision"]), dtype="float32"))
    save_composed(model, proc, root / "llava", manifest={"kind": "bench"})
    return root / "llava"


def make_items(n: int) -> list[EvalItem]:
    shapes = [(o.name, c) for o in OBJECTS for c in COLORS]
    rng = random.Random(0)
    out = []
    for i in range(n):
        q = QUESTIONS[i % len(QUESTIONS)] + " Please answer." * (i % 3)  # varied lengths -> real padding
        img = draw_objects(*shapes[i % len(shapes)], 1 + i % 4, rng) if i % 2 == 0 else None
        out.append(EvalItem(id=str(i), prompt=q, benchmark="bench", category="c", image=img))
    return out


def timed(em, prompts, batch_size: int, max_new: int):
    start = time.perf_counter()
    toks = generate_tokens(em.model, em.tokenizer, prompts, batch_size=batch_size, max_new_tokens=max_new)
    return toks, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-new", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    ap.add_argument("--json", metavar="PATH", help="also write the measured numbers here as one JSON")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = build_model(Path(tmp), a.hidden, a.layers)
        em = load_eval_model(str(base), [], GenerationSpec(), device=a.device)
        prompts = [encode_item(em, it) for it in make_items(a.n)]
        timed(em, prompts[:2], 2, 4)  # warm-up
        single, t1 = timed(em, prompts, 1, a.max_new)
        batched, tb = timed(em, prompts, a.batch_size, a.max_new)
    n_tok = sum(map(len, batched))
    where = torch.cuda.get_device_name() if a.device.startswith("cuda") else \
        f"CPU, torch threads={torch.get_num_threads()}"
    print(f"model: tiny Llava (llama LM hidden={a.hidden} layers={a.layers}, CLIP), fp32, {where}")
    print(f"items={a.n} (half with images) max_new_tokens={a.max_new} generated tokens={n_tok}")
    print(f"batch 1 : {a.n / t1:7.2f} items/s ({t1:.2f} s)")
    print(f"batch {a.batch_size}: {a.n / tb:7.2f} items/s ({tb:.2f} s)")
    print(f"speedup : {t1 / tb:.2f}x   identical outputs: {single == batched}")
    if a.json:
        atomic_write_json(a.json, {"device": where, "hidden": a.hidden, "layers": a.layers, "items": a.n,
                                   "max_new_tokens": a.max_new, "generated_tokens": n_tok,
                                   "batch_1_items_per_s": round(a.n / t1, 2), "batch_size": a.batch_size,
                                   "batched_items_per_s": round(a.n / tb, 2), "speedup": round(t1 / tb, 2),
                                   "identical_outputs": single == batched})


if __name__ == "__main__":
    main()
