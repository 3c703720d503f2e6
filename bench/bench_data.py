"""Data benchmark: the first-pass check (records/s, 1 and N processes), the cached rerun, and the
time a toy-like training step waits for its data; each beside the code before issue 20, measured
in the same invocation.

  python bench/bench_data.py --n 20000 --n-instruct 5000     # minutes on a shared 2-core machine
  python bench/bench_data.py                                  # full size: 558k + 665k records

Data: a synthetic LLaVA-Pretrain-shaped file (one `<image>` + a short instruction, a BLIP-style
caption of 8-20 words) and a LLaVA-Instruct-shaped one (1-6 rounds of ~12-word questions and
20-120-word answers, 1 in 8 text-only), over 500 distinct 336x336 JPEGs. The processor is a real
GGUF tokenizer (Llama-2 SentencePiece by default) given `<image>`, a pad token and a chat template
as `compose` does, with CLIP-L/336 geometry (576 image tokens).

"Before" is the same TrainSet with `encode_chat` taken from the commit this work started from
(`--ref`, via `git show`), checked one record at a time in one process (how it ran before); it
is measured on the first `--ref-n` records and extrapolated. "One by one" is today's encoder
called per record (the check before records were tokenized a chunk at a time). The toy-like run
trains LoRA on a tiny Llava built as the tests build it, batches of 32, with batches built in the
training process by the old encoder (before) and by DataLoader workers (after).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image
from transformers import AutoTokenizer, CLIPImageProcessor, LlavaProcessor

import lora_vl.data.dataset as dataset_mod
from lora_vl.data import encode
from lora_vl.data.check import CheckCache, machine_workers
from lora_vl.data.config import DataConfig, DataSource
from lora_vl.data.dataset import TrainSet
from lora_vl.models.templates import TEMPLATES
from lora_vl.train.stage import data_provenance

ROOT = Path(__file__).resolve().parents[1]
TOKENIZERS = {"llama-spm": ROOT / "tests/fixtures/tokenizers"}  # others: ../shared/fixtures/tokenizers
WORDS = ("a the man woman dog cat two three red blue green white black small large old young sits stands "
         "walks near on in front of next to table street car bus tree building field water sky grass "
         "holding wearing shirt hat looking at playing with ball people group city road house window").split()
PROMPTS = ["Describe the image concisely.", "Provide a brief description of the given image.",
           "Share a concise interpretation of the image provided.",
           "Write a terse but informative summary of the picture."]


def words(rng, lo, hi) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def write_data(folder: Path, n: int, n_instruct: int, n_images: int = 500) -> tuple[Path, Path]:
    rng = random.Random(0)
    (folder / "img").mkdir(parents=True, exist_ok=True)
    for k in range(n_images):
        Image.new("RGB", (336, 336), (k % 256, (7 * k) % 256, 90)).save(folder / "img" / f"{k}.jpg")
    pretrain = [{"id": f"p{i}", "image": f"img/{i % n_images}.jpg", "conversations": [
        {"from": "human",
         "value": ("<image>\n" + rng.choice(PROMPTS)) if i % 2 else (rng.choice(PROMPTS) + "\n<image>")},
        {"from": "gpt", "value": words(rng, 8, 20)}]} for i in range(n)]
    instruct = []
    for i in range(n_instruct):
        conv = []
        for _turn in range(rng.randint(1, 6)):
            conv += [{"from": "human", "value": words(rng, 6, 18) + "?"},
                     {"from": "gpt", "value": words(rng, 20, 120) + "."}]
        rec = {"id": f"i{i}", "conversations": conv}
        if i % 8:
            conv[0]["value"] = "<image>\n" + conv[0]["value"]
            rec["image"] = f"img/{i % n_images}.jpg"
        instruct.append(rec)
    paths = folder / "pretrain.json", folder / "instruct.json"
    for p, recs in zip(paths, (pretrain, instruct)):
        p.write_text(json.dumps(recs))
    return paths


def processor(name: str) -> LlavaProcessor:
    folder = TOKENIZERS.get(name, ROOT.parent / "shared/fixtures/tokenizers")
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=f"ggml-vocab-{name}.gguf")
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    tok.pad_token = tok.pad_token or tok.unk_token or tok.eos_token
    tok.chat_template = TEMPLATES["llava_llama_2"]
    ip = CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    return LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=14, chat_template=tok.chat_template,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1)


def old_encode_chat(ref: str):
    """`encode_chat` as it was at commit `ref`."""
    src = subprocess.run(["git", "show", f"{ref}:lora_vl/data/encode.py"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "encode_before.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("encode_before", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["encode_before"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    mod.BadRecord, mod.Overlong = encode.BadRecord, encode.Overlong  # raised as today's, so TrainSet catches them
    return mod.encode_chat


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


class OneByOne(TrainSet):
    """The check as before batching: `encode_chat` (a tokenizer call) per record."""

    def _judge_many(self, records):
        return [self._judge(s) for s in records]


def bench_check(label: str, path: Path, chat_format: str, proc, n: int, args, old, run_dir: Path) -> None:
    cfg = DataConfig(sources=[DataSource(format="llava_json", path=str(path))], max_length=2048,
                     chat_format=chat_format, bad_records="skip")
    ref_cfg = DataConfig(sources=[DataSource(format="llava_json", path=str(path), num_samples=min(n, args.ref_n))],
                         max_length=2048, chat_format=chat_format, bad_records="skip")
    new = dataset_mod.encode_chat
    dataset_mod.encode_chat = old
    try:
        ref, t_ref = timed(lambda: OneByOne(ref_cfg, proc, workers=1))
    finally:
        dataset_mod.encode_chat = new
    print(f"{label}: before (1 process, first {len(ref)} records): {len(ref) / t_ref:,.0f} rec/s "
          f"-> {n / (len(ref) / t_ref) / 60:,.1f} min for {n:,}")
    if args.one_by_one:
        one, t = timed(lambda: OneByOne(cfg, proc, workers=1))
        print(f"{label}: a tokenizer call per record (as before batching), 1 process: {n / t:,.0f} rec/s, "
              f"{t:,.1f} s for {n:,}")
    for workers in sorted({1, args.workers}):
        data, t = timed(lambda workers=workers: TrainSet(cfg, proc, workers=workers))
        print(f"{label}: after, {workers} process(es): {n / t:,.0f} rec/s, {t:,.1f} s for {n:,} "
              f"(JSON read included)")
    cache = CheckCache(run_dir / label, data_provenance(cfg))
    TrainSet(cfg, proc, cache=cache, workers=args.workers)
    again, t = timed(lambda: TrainSet(cfg, proc, cache=CheckCache(run_dir / label, data_provenance(cfg))))
    assert again.lengths == data.lengths
    print(f"{label}: cached rerun (data hash + JSON read + verdicts): {t:,.1f} s for {n:,}")


def bench_steps(folder: Path, steps: int, old) -> None:
    """Data wait per step vs step time, LoRA on a tiny Llava (toy-scale LM), batches of 32."""
    import torch

    from lora_vl.models import lora as L
    from lora_vl.models.compose import ComposeSpec, compose, save_composed
    from lora_vl.models.load import load_vlm
    from lora_vl.models.tiny import build_tiny_parts
    from lora_vl.toy.data import corpus_texts, write_world_data
    from lora_vl.toy.scale import SCALES
    from lora_vl.train.config import LoraSettings, OptimConfig
    from lora_vl.train.loop import train

    files = write_world_data(folder / "world", SCALES["test"])
    parts = build_tiny_parts(folder / "parts", hidden=128, layers=4, corpus=corpus_texts(files))
    model, proc = compose(ComposeSpec(lm=str(parts["lm"]), vision=str(parts["vision"]), dtype="float32"))
    save_composed(model, proc, folder / "base", {"kind": "base"})
    cfg_data = DataConfig(sources=[DataSource(format="llava_json", path=str(files["instruct"]),
                                              num_samples=32 * steps)],
                          max_length=512)
    for label, workers, encoder in (("before (in-process, old encoder)", 0, old),
                                    (f"after ({min(8, machine_workers() - 1)} DataLoader workers)", None,
                                     dataset_mod.encode_chat)):
        new, dataset_mod.encode_chat = dataset_mod.encode_chat, encoder
        try:
            model, proc = load_vlm(folder / "base", quantization="none")
            model = L.prepare_base(model, False, gradient_checkpointing=False)
            model = L.add_lora(model, LoraSettings(r=8, alpha=16, dropout=0.0), train_projector=True, seed=0)
            data = TrainSet(cfg_data, proc)
            cfg = OptimConfig(lr=1e-3, max_steps=steps, micro_batch_size=32, global_batch_size=32, save_every=10**9)
            tag = "w0" if workers == 0 else "wn"
            res = train(model, L.param_groups(model, 1e-3, 1e-3), data, cfg, ckpt_dir=folder / tag / "ck",
                        tb_dir=folder / tag / "tb", fingerprint=tag, desc=tag, data_workers=workers)
        finally:
            dataset_mod.encode_chat = new
        torch.set_num_threads(torch.get_num_threads())
        print(f"toy-like run, {label}: data wait {res.data_seconds / steps * 1000:.0f} ms of "
              f"{res.seconds / steps * 1000:.0f} ms per step ({100 * res.data_seconds / res.seconds:.1f}%)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=558_128, help="stage-1 (LLaVA-Pretrain-shaped) records")
    ap.add_argument("--n-instruct", type=int, default=665_298, help="stage-2 (Instruct-shaped) records")
    ap.add_argument("--tokenizer", default="llama-spm", help="GGUF vocabulary: llama-spm, llama-bpe, qwen2, phi-3")
    ap.add_argument("--workers", type=int, default=machine_workers(), help="check processes (after)")
    ap.add_argument("--ref", default="13f798f", help="commit whose encode_chat is 'before'")
    ap.add_argument("--ref-n", type=int, default=400, help="records the slow 'before' check measures")
    ap.add_argument("--one-by-one", action=argparse.BooleanOptionalAction, default=True,
                    help="also time the per-record check (this code, without batching)")
    ap.add_argument("--steps", type=int, default=6, help="steps of the toy-like run (0: skip it)")
    args = ap.parse_args()
    proc, old = processor(args.tokenizer), old_encode_chat(args.ref)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pretrain, instruct = write_data(tmp, args.n, args.n_instruct)
        print(f"tokenizer {args.tokenizer} ({len(proc.tokenizer):,} tokens), {args.workers} check processes")
        bench_check("stage 1 (pretrain-shaped, plain)", pretrain, "plain", proc, args.n, args, old, tmp / "run")
        if args.n_instruct:
            bench_check("stage 2 (instruct-shaped)", instruct, "model", proc, args.n_instruct, args, old, tmp / "run")
        if args.steps:
            bench_steps(tmp / "toy", args.steps, old)


if __name__ == "__main__":
    sys.exit(main())
