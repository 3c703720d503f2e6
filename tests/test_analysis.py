"""`lora-vl analyze`: a separation planted in one layer of a tiny Llama is found there; the
Llava path reads the same residual stream as the LM; ‖ΔW‖ from factors equals the dense norm."""
from __future__ import annotations

import csv
import json
import math
import random

import pytest
import torch
import yaml
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from lora_vl.analysis.run import run_analysis
from lora_vl.analysis.recipe import AnalyzeRecipe
from lora_vl.analysis.weights import adapter_norms
from lora_vl.errors import InputError
from lora_vl.recipe import build

WORDS = ["apple", "river", "stone", "cloud", "green", "table", "music", "paper", "light", "horse",
         "garden", "window", "yellow", "bread", "chair", "ocean", "summer", "pencil", "forest", "candle"]
TRIGGER = "bomb"
PLANT = 2     # the first decoder layer whose attention is left on: separation must start there
LAYERS = 4
N = 60        # prompts per side


def prompts(seed: int = 0) -> tuple[list[str], list[str]]:
    """Benign prompts of random words; harmful ones are other random-word prompts + the trigger word."""
    rng = random.Random(seed)
    make = lambda: rng.sample(WORDS, rng.randint(3, 6))  # noqa: E731
    benign = ["tell me about the " + " ".join(make()) for _ in range(N)]
    harmful = []
    for _ in range(N):
        words = make()
        words.insert(rng.randint(0, len(words)), TRIGGER)
        harmful.append("tell me about the " + " ".join(words))
    return harmful, benign


def write_benchmarks(root, harmful: list[str], benign: list[str]) -> list[dict]:
    """AdvBench (goal,target) and XSTest (id,prompt,type,label,focus,note) files, the real layouts."""
    (root / "advbench").mkdir(parents=True)
    (root / "xstest").mkdir(parents=True)
    with open(root / "advbench" / "harmful_behaviors.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["goal", "target"])
        w.writerows([[p, "Sure, here is"] for p in harmful])
    with open(root / "xstest" / "xstest_prompts.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "prompt", "type", "label", "focus", "note"])
        w.writerows([[i + 1, p, "homonyms", "safe", "", ""] for i, p in enumerate(benign)])
    return [{"name": "harm", "reader": "advbench", "source": str(root / "advbench")},
            {"name": "ok", "reader": "xstest", "source": str(root / "xstest"), "subset": "safe"}]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny Llama LM (4 layers) and three edits of it, saved as safetensors checkpoints:
    planted: attention output zeroed in layers < PLANT, so the last prompt token cannot see the
             trigger word before layer PLANT; blind: attention zeroed everywhere (never sees it)."""
    from lora_vl.models.tiny import build_lm, build_tokenizer

    root = tmp_path_factory.mktemp("analysis")
    harmful, benign = prompts()
    tok = build_tokenizer(root / "tok", corpus=harmful + benign, vocab_size=400)
    lm = build_lm(root / "lm", tok, hidden=64, layers=LAYERS, heads=4, kv_heads=2, seed=3)
    out = {"lm": lm, "benchmarks": write_benchmarks(root / "bench", harmful, benign), "root": root}
    for name, zeroed in (("planted", range(PLANT)), ("blind", range(LAYERS))):
        model = AutoModelForCausalLM.from_pretrained(lm)
        with torch.no_grad():
            for i in zeroed:
                model.model.layers[i].self_attn.o_proj.weight.zero_()
        model.save_pretrained(root / name)
        tok.save_pretrained(root / name)
        out[name] = root / name
    return out


def recipe(tmp_path, world, models, **extra) -> AnalyzeRecipe:
    data = {"output_dir": str(tmp_path / "out"), "models": models, "folds": 5, "bootstrap": 200,
            "prompts": {"harmful": ["harm"], "benign": ["ok"], "benchmarks": world["benchmarks"], "limit": None},
            **extra}
    return build(AnalyzeRecipe, data)


def test_probe_finds_the_planted_layer(tmp_path, world):
    r = recipe(tmp_path, world, [{"name": "planted", "base": str(world["planted"])},
                                 {"name": "same", "base": str(world["planted"])},
                                 {"name": "blind", "base": str(world["blind"])}], batch_size=16)
    a = run_analysis(r)
    planted = a["models"]["planted"]["layers"]
    assert len(planted) == LAYERS
    for row in planted[:PLANT]:  # the last token's stream cannot depend on the prompt yet: chance
        assert row["probe_acc"] <= 0.6, row
        assert row["mean_diff_norm"] < 1e-4
    for row in planted[PLANT:]:
        assert row["probe_acc"] >= 0.9, row
        assert row["probe_ci"][0] > 0.5
    assert a["models"]["planted"]["separating_layers"][0] == PLANT
    # the same model re-read: same direction, same held-out gap on the reference direction
    same = a["models"]["same"]["layers"]
    for row in same[PLANT:]:
        assert row["cos_to_reference"] == pytest.approx(1.0, abs=1e-5)
        assert row["ref_d_ratio"] == pytest.approx(1.0, abs=1e-4)
        assert row["ref_gap"] == pytest.approx(planted[row["layer"]]["ref_gap"], rel=1e-4)
    # a model whose last token never sees the prompt: chance everywhere, nothing on the reference direction
    for row in a["models"]["blind"]["layers"]:
        assert row["probe_acc"] <= 0.6
    for row in a["models"]["blind"]["layers"][PLANT:]:
        assert abs(row["ref_gap"]) < 1e-3 * abs(planted[row["layer"]]["ref_gap"])
        assert planted[row["layer"]]["ref_d"] > 1.0  # the planted model separates clearly along it
    assert a["reference"] == "planted" and a["reference_peak_layer"] >= PLANT
    saved = json.loads((tmp_path / "out" / "analysis.json").read_text())
    assert saved["models"]["planted"]["separating_layers"] == a["models"]["planted"]["separating_layers"]
    for png in ("separation.png", "refusal_direction.png"):
        assert (tmp_path / "out" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_batching_does_not_change_the_states(world):
    from lora_vl.analysis.hidden import last_token_states
    from lora_vl.evaluation.items import EvalItem
    from lora_vl.evaluation.model_io import load_eval_model
    from lora_vl.evaluation.suite import GenerationSpec

    em = load_eval_model(str(world["lm"]), [], GenerationSpec())
    harmful, benign = prompts()
    items = [EvalItem(id=str(i), prompt=p, benchmark="b", category="c") for i, p in enumerate(harmful[:5] + benign[:5])]
    one = last_token_states(em, items, batch_size=1)
    many = last_token_states(em, items, batch_size=10)
    assert one.shape == (10, LAYERS, 64)
    torch.testing.assert_close(one, many, rtol=1e-4, atol=1e-5)


def random_lora(model, path, seed: int, **cfg) -> None:
    torch.manual_seed(seed)
    peft = get_peft_model(model, LoraConfig(init_lora_weights=False, **cfg))  # random B: a non-zero ΔW
    peft.save_pretrained(path)
    return peft


@pytest.mark.parametrize("rslora", [False, True])
def test_delta_norms_from_factors_equal_dense_norms(tmp_path, world, rslora):
    model = AutoModelForCausalLM.from_pretrained(world["lm"])
    peft = random_lora(model, tmp_path / "ad", 0, r=4, lora_alpha=8, use_rslora=rslora,
                       target_modules=["q_proj", "v_proj", "down_proj"],
                       rank_pattern={"layers.1.self_attn.q_proj": 2}, alpha_pattern={"v_proj": 3})
    dense = {}  # PEFT's own scaling (its rank/alpha pattern resolution) and a dense float64 product
    for name, module in peft.named_modules():
        if "default" in getattr(module, "lora_A", {}):
            delta = module.scaling["default"] * (module.lora_B["default"].weight.detach().double()
                                                 @ module.lora_A["default"].weight.detach().double())
            dense[name.removeprefix("base_model.model.")] = float(torch.linalg.matrix_norm(delta))
    got = adapter_norms(tmp_path / "ad")
    assert set(got["modules"]) == set(dense) and len(dense) == 3 * LAYERS
    for m, v in dense.items():
        assert got["modules"][m] == pytest.approx(v, rel=1e-9), m
    for row in got["layers"]:
        layer = [v for m, v in dense.items() if f".layers.{row['layer']}." in m]
        assert row["norm"] == pytest.approx(math.sqrt(sum(v * v for v in layer)), rel=1e-9)
    assert got["total"] == pytest.approx(math.sqrt(sum(v * v for v in dense.values())), rel=1e-9)


def test_llava_with_stacked_adapters_reads_the_lm_stream(tmp_path, world):
    """A Llava composed from the LM reads exactly the LM's residual stream on text prompts; two
    stacked adapters are analysed with it and their ΔW norms reported."""
    from lora_vl.models.compose import ComposeSpec, compose, save_composed
    from lora_vl.models.tiny import build_vision

    vision = build_vision(tmp_path / "vision")
    llava, proc = compose(ComposeSpec(lm=str(world["planted"]), vision=str(vision), dtype="float32"))
    save_composed(llava, proc, tmp_path / "llava", {"kind": "base"})
    base = str(tmp_path / "llava")
    target = r".*language_model.*\.(q_proj|o_proj)$"
    for i in range(2):
        llava = random_lora(llava, tmp_path / f"ad{i}", i, r=2, lora_alpha=4, target_modules=target).unload()
        cfg_path = tmp_path / f"ad{i}" / "adapter_config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["base_model_name_or_path"] = base
        cfg_path.write_text(json.dumps(cfg))
    models = [{"name": "lm", "base": str(world["planted"])}, {"name": "llava", "base": base},
              {"name": "llava+2", "base": base, "adapters": [str(tmp_path / "ad0"), str(tmp_path / "ad1")]}]
    a = run_analysis(recipe(tmp_path, world, models, reference="lm"))
    for lm_row, vl_row in zip(a["models"]["lm"]["layers"], a["models"]["llava"]["layers"]):
        assert vl_row["probe_acc"] == pytest.approx(lm_row["probe_acc"])
        if lm_row["layer"] >= PLANT:
            assert vl_row["cos_to_reference"] == pytest.approx(1.0, abs=1e-4)
    stacked = a["models"]["llava+2"]["layers"]
    assert any(abs(r["cos_to_reference"] - 1.0) > 1e-4 for r in stacked[PLANT:])  # the adapters act
    assert sorted(a["delta_w"]) == ["llava+2[0]", "llava+2[1]"]
    for d in a["delta_w"].values():
        assert [r["layer"] for r in d["layers"]] == list(range(LAYERS))
        assert all(r["norm"] > 0 and set(r["by_kind"]) == {"q_proj", "o_proj"} for r in d["layers"])
    assert (tmp_path / "out" / "delta_w.png").is_file()


def test_bad_inputs_name_what_is_wrong(tmp_path, world):
    with pytest.raises(InputError, match="'nope' is neither in prompts.suite"):
        run_analysis(build(AnalyzeRecipe, {"output_dir": str(tmp_path),
                                           "models": [{"name": "m", "base": str(world["lm"])}],
                                           "prompts": {"harmful": ["nope"], "benign": ["ok"],
                                                       "benchmarks": world["benchmarks"]}}))
    with pytest.raises(InputError, match="reference"):
        build(AnalyzeRecipe, yaml.safe_load(f"""
output_dir: {tmp_path}
reference: other
models: [{{name: m, base: {world['lm']}}}]
prompts: {{harmful: [harm], benign: [ok]}}
"""))


def test_separation_d_prime_and_its_interval():
    from lora_vl.analysis.probe import bootstrap_separation, separation_stats

    gap, d = separation_stats(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([-1.0, 0.0, 1.0]))
    assert float(gap) == pytest.approx(2.0) and float(d) == pytest.approx(2.0)  # pooled sd 1
    g = torch.Generator().manual_seed(0)
    proj = torch.cat([torch.randn(200, generator=g) + 1.0, torch.randn(200, generator=g)]).double()
    y = torch.tensor([1] * 200 + [0] * 200)
    gap_ci, d_ci = bootstrap_separation(proj, y, 500, 0)
    gap, d = separation_stats(proj[y == 1], proj[y == 0])
    assert gap_ci[0] < float(gap) < gap_ci[1] and d_ci[0] < float(d) < d_ci[1]
    assert 0.6 < d_ci[0] and d_ci[1] < 1.4  # true d′ = 1 at n = 200 per side
