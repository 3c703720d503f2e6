"""`lora-vl analyze RECIPE [key=value ...]`: the safety-layer analysis of the study.

(a) per decoder layer, how well harmful and benign prompts separate in each model's hidden
    states (held-out logistic probe, mean-difference direction);
(b) per layer, ‖ΔW‖_F of each adapter, computed from its LoRA factors;
(c) how the reference model's (the aligned LLM's) refusal direction fares in every other model:
    cosine between the directions, and the held-out harmful − benign projection gap on it.
Writes OUTPUT_DIR/analysis.json and separation.png, refusal_direction.png, delta_w.png.
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch

from lora_vl.analysis import plots, probe
from lora_vl.analysis.hidden import model_states
from lora_vl.analysis.prompts import read_prompt_sets
from lora_vl.analysis.recipe import AdapterEntry, AnalyzeRecipe
from lora_vl.analysis.weights import adapter_norms
from lora_vl.artifacts import atomic_write_json
from lora_vl.errors import InputError
from lora_vl.recipe import describe, load_recipe

JSON = "analysis.json"
EXAMPLE = """example recipe:
  output_dir: outputs/analysis
  prompts:
    suite: eval/paper.yaml            # benchmarks named below are looked up here
    harmful: [advbench]
    benign: [xstest]
    limit: 200
  models:
    - {name: llm, base: meta-llama/Llama-2-7b-chat-hf}
    - {name: vl, base: outputs/base, adapters: [outputs/adapt/adapter]}
    - {name: vl+safety, base: outputs/base, adapters: [outputs/adapt/adapter, outputs/safety/adapter]}
  reference: llm
  quantization: 4bit
"""


def analyse_models(recipe: AnalyzeRecipe) -> tuple[dict, dict]:
    """({model name: per-layer rows}, prompt info); the reference model goes first."""
    ps = read_prompt_sets(recipe.prompts)
    folds = probe.stratified_folds(ps.labels, recipe.folds, recipe.prompts.seed)
    ref_name = recipe.reference_name
    order = sorted(recipe.models, key=lambda m: m.name != ref_name)
    ref_dirs = ref_ds = ref_shape = None
    out = {}
    for entry in order:
        t0 = time.time()
        states, is_vlm = model_states(entry, ps.items, recipe)
        if ref_shape is None:
            ref_shape = tuple(states.shape[1:])
        elif tuple(states.shape[1:]) != ref_shape:
            raise InputError(f"analyze models: {entry.name!r} has {states.shape[1]} layers of width "
                             f"{states.shape[2]}, but the reference {ref_name!r} has {ref_shape[0]} of "
                             f"width {ref_shape[1]}; the models must share one language model")
        layers = [probe.layer_separation(states[:, i], ps.labels, ps.fit, folds, recipe.l2)
                  for i in range(states.shape[1])]
        if ref_dirs is None:
            ref_dirs = [r["direction"] for r in layers]
        for i, r in enumerate(layers):
            r["layer"] = i
            r.update(probe.reference_projection(states[:, i], ps.labels, ps.fit, ref_dirs[i],
                                                recipe.bootstrap, recipe.prompts.seed + i))
            r["cos_to_reference"] = probe.cosine(r.pop("direction"), ref_dirs[i])
        if ref_ds is None:
            ref_ds = [r["ref_d"] for r in layers]
        for r, d in zip(layers, ref_ds):  # how much of the reference's separation this model keeps
            r["ref_d_ratio"] = None if not d or r["ref_d"] is None else r["ref_d"] / d
        out[entry.name] = {"base": entry.base, "adapters": list(entry.adapters), "is_vlm": is_vlm,
                           "seconds": round(time.time() - t0, 2), "layers": layers,
                           "separating_layers": [r["layer"] for r in layers if r["probe_ci"][0] > 0.5]}
        del states
    info = {"sources": ps.sources, "n_harmful": ps.n_harmful, "n_benign": ps.n_benign,
            "n_fit": sum(ps.fit), "n_held_out": len(ps.fit) - sum(ps.fit), "images": recipe.prompts.images,
            "item_ids": [f"{it.benchmark}/{it.id}" for it in ps.items], "folds": recipe.folds}
    return out, info


def default_adapters(recipe: AnalyzeRecipe) -> list[AdapterEntry]:
    seen, out = set(), []
    for m in recipe.models:
        for i, a in enumerate(m.adapters):
            if a not in seen:
                seen.add(a)
                out.append(AdapterEntry(name=f"{m.name}[{i}]", path=a))
    return out


def reference_peak(models: dict, ref: str | None) -> int | None:
    """The reference model's safety layer: where its held-out harmful/benign separation along its
    own direction (d′) is largest."""
    if ref is None:
        return None
    rows = [r for r in models[ref]["layers"] if r["ref_d"] is not None]
    return max(rows, key=lambda r: r["ref_d"])["layer"] if rows else None


def run_analysis(recipe: AnalyzeRecipe) -> dict:
    out_dir = Path(recipe.output_dir)
    models, prompts = analyse_models(recipe) if recipe.models else ({}, None)
    adapters = recipe.delta_w or default_adapters(recipe)
    analysis = {"kind": "safety_layer_analysis", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "recipe": _asdict(recipe), "reference": recipe.reference_name if models else None,
                "prompts": prompts, "models": models,
                "delta_w": {a.name: adapter_norms(a.path) for a in adapters}, "plots": []}
    analysis["reference_peak_layer"] = reference_peak(models, analysis["reference"])
    if models:
        analysis["plots"] += [str(plots.plot_separation(analysis, out_dir / "separation.png")),
                              str(plots.plot_reference(analysis, out_dir / "refusal_direction.png"))]
    if analysis["delta_w"]:
        analysis["plots"].append(str(plots.plot_delta_w(analysis, out_dir / "delta_w.png")))
    atomic_write_json(out_dir / JSON, analysis)
    return analysis


def _asdict(recipe) -> dict:
    return dataclasses.asdict(recipe)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="lora-vl analyze", formatter_class=argparse.RawDescriptionHelpFormatter,
                                 description=__doc__,
                                 epilog=EXAMPLE + "\nrecipe keys (override any with key.sub=value):\n"
                                 + describe(AnalyzeRecipe))
    ap.add_argument("recipe", help="analysis recipe YAML (example below)")
    ap.add_argument("overrides", nargs="*", help="key=value overrides, e.g. prompts.limit=50")
    a = ap.parse_args(argv)
    torch.set_grad_enabled(False)
    analysis = run_analysis(load_recipe(AnalyzeRecipe, a.recipe, a.overrides))
    for name, m in analysis["models"].items():
        accs = " ".join(f"{r['probe_acc']:.2f}" for r in m["layers"])
        print(f"{name:>14}: probe accuracy per layer {accs}")
    for name, d in analysis["delta_w"].items():
        print(f"{name:>14}: ‖ΔW‖_F per layer " + " ".join(f"{r['norm']:.3g}" for r in d["layers"]))
    print(f"wrote {Path(analysis['recipe']['output_dir']) / JSON} and {len(analysis['plots'])} plot(s)")
    return 0
