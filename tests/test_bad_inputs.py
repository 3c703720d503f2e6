"""A corpus of bad inputs run through the real `lora-vl` command line: each ends in one clean
message naming what is wrong (exit 2, no traceback), or in a counted skip — and nothing already
on disk is changed."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file, save_file

from lora_vl.cli import main
from lora_vl.handoff import read_manifest, write_manifest
from lora_vl.models.compose import ComposeSpec, compose, save_composed
from lora_vl.models.tiny import build_tiny_parts

SAFETY = Path(__file__).parent / "fixtures" / "safety"
EVAL = Path(__file__).parent / "fixtures" / "eval"
GOOD = {"id": "g1", "image": "img.png", "conversations": [
    {"from": "human", "value": "<image>\nWhat colour is it?"}, {"from": "gpt", "value": "It is red."}]}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny Llava base, a VL adapter made on it, and a second base it was not made on."""
    from lora_vl.models.load import load_vlm
    from lora_vl.models import lora as L
    from lora_vl.train.config import LoraSettings

    root = tmp_path_factory.mktemp("bad_inputs")
    parts = build_tiny_parts(root / "parts", hidden=64)
    model, proc = compose(ComposeSpec(lm=str(parts["lm"]), vision=str(parts["vision"]), dtype="float32"))
    save_composed(model, proc, root / "base", {"kind": "base"})
    vl, _ = load_vlm(root / "base", quantization="none")
    vl = L.add_lora(L.prepare_base(vl, False, False), LoraSettings(r=2, alpha=4, dropout=0.0), train_projector=True)
    vl.save_pretrained(root / "vl")
    write_manifest(root / "vl", {"kind": "vl_adapter", "base": str(root / "base")})
    Image.new("RGB", (32, 32), (200, 20, 20)).save(root / "img.png")
    return {"root": root, "base": root / "base", "vl": root / "vl", "lm": parts["lm"]}


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def adapt_recipe(world, case: Path, data: dict | None = None, **model) -> dict:
    shutil.copy(world["root"] / "img.png", case / "img.png")
    source = {"format": "llava_json", "path": str(case / "data.json"), **(data or {})}
    return {"output_dir": str(case / "run"),
            "model": {"base": str(world["base"]), "quantization": "none", "gradient_checkpointing": False, **model},
            "lora": {"r": 2, "alpha": 4, "dropout": 0.0},
            "stage2": {"data": {"sources": [source], "max_length": 128},
                       "optim": {"micro_batch_size": 1, "global_batch_size": 1, "max_steps": 1}}}


def safety_recipe(world, case: Path, method="sft", sources=None, parent=None) -> dict:
    shutil.copytree(SAFETY, case / "safety")
    sources = sources or [{"format": "vlguard", "path": str(case / "safety/vlguard_train.json")}]
    section = {"data": {"sources": sources, "max_length": 192},
               "optim": {"micro_batch_size": 1, "global_batch_size": 1, "max_steps": 1}}
    return {"output_dir": str(case / "run"), "parent": str(parent or world["vl"]), "method": method,
            "model": {"base": str(world["base"]), "quantization": "none", "gradient_checkpointing": False},
            "lora": {"r": 2, "alpha": 4, "dropout": 0.0}, method: section}


def write(case: Path, name: str, content) -> Path:
    path = case / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def records(case, recs):
    write(case, "data.json", recs)


def image_file(case, name, data: bytes):
    write(case, name, data)


def truncated_png(case):
    Image.new("RGB", (32, 32), (1, 2, 3)).save(case / "img.png")
    raw = (case / "img.png").read_bytes()
    (case / "img.png").write_bytes(raw[: len(raw) // 2])


def corrupt_adapter(case, world) -> Path:
    shutil.copytree(world["vl"], case / "vl")
    (case / "vl/adapter_model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    return case / "vl"


def other_base_adapter(case, world) -> Path:
    shutil.copytree(world["vl"], case / "vl")
    write_manifest(case / "vl", {"kind": "vl_adapter", "base": "meta-llama/Llama-2-7b-chat-hf"})
    return case / "vl"


def adapter_without_config(case, world) -> Path:
    shutil.copytree(world["vl"], case / "vl")
    (case / "vl/adapter_config.json").unlink()
    return case / "vl"


def adapter_config_not_json(case, world) -> Path:
    shutil.copytree(world["vl"], case / "vl")
    (case / "vl/adapter_config.json").write_text("{oops")
    return case / "vl"


def adapt(world, case, recipe: dict, *overrides) -> list[str]:
    path = write(case, "recipe.yaml", yaml.safe_dump(recipe))
    return ["adapt", str(path), *overrides]


def with_data(recs, data=None, **model):
    """An adapt case whose data file holds `recs` (a list, or raw bytes / text)."""
    def make(world, case):
        if isinstance(recs, (bytes, str)):
            write(case, "data.json", recs)
        else:
            records(case, recs)
        return adapt(world, case, adapt_recipe(world, case, data, **model))
    return make


def with_image(data: bytes | None = None, mutate=None):
    def make(world, case):
        records(case, [GOOD])
        argv = adapt(world, case, adapt_recipe(world, case))
        if data is not None:
            image_file(case, "img.png", data)
        if mutate is not None:
            mutate(case)
        return argv
    return make


def recipe_change(change):
    def make(world, case):
        records(case, [GOOD])
        r = adapt_recipe(world, case)
        change(r)
        return adapt(world, case, r)
    return make


def safety(method="sft", sources=None, parent=None, edit=None):
    def make(world, case):
        r = safety_recipe(world, case, method, sources(case) if sources else None,
                          parent(case, world) if parent else None)
        if edit:
            edit(case)
        path = write(case, "recipe.yaml", yaml.safe_dump(r))
        return ["safety", str(path)]
    return make


def vlguard_edit(fn):
    def edit(case):
        path = case / "safety/vlguard_train.json"
        recs = json.loads(path.read_text())
        fn(recs)
        path.write_text(json.dumps(recs))
    return edit


def eval_case(benchmarks, adapter=None, model=None):
    def make(world, case):
        suite = {"name": "bad", "generation": {"max_new_tokens": 2}, "benchmarks": benchmarks(case)}
        path = write(case, "suite.yaml", yaml.safe_dump(suite))
        argv = ["eval", str(path), "--model", str(model or world["base"]), "--out", str(case / "out")]
        if adapter:
            argv += ["--adapter", str(adapter(case, world))]
        return argv
    return make


def merge_case(inputs, **over):
    def make(world, case):
        recipe = {"inputs": [{"path": str(p), "name": f"in{i}"} for i, p in enumerate(inputs(case, world))],
                  "output": str(case / "merged"), **over}
        return ["merge", str(write(case, "merge.yaml", yaml.safe_dump(recipe)))]
    return make


def nan_adapter(case, world) -> Path:
    """A copy of the VL adapter with one NaN in a LoRA factor (a diverged run's output)."""
    shutil.copytree(world["vl"], case / "vl")
    weights = load_file(case / "vl/adapter_model.safetensors")
    key = next(k for k in sorted(weights) if k.endswith("lora_B.weight"))
    weights[key][0, 0] = float("nan")
    save_file(weights, case / "vl/adapter_model.safetensors")
    return case / "vl"


def rank_mismatch_adapter(case, world) -> Path:
    """A copy of the VL adapter whose config says another rank than its weights hold."""
    shutil.copytree(world["vl"], case / "vl")
    config = json.loads((case / "vl/adapter_config.json").read_text())
    (case / "vl/adapter_config.json").write_text(json.dumps(dict(config, r=config["r"] * 2)))
    return case / "vl"


def earlier_results(benchmarks):
    """An eval case whose --out already holds results.json from an earlier run (must survive)."""
    def make(world, case):
        write(case, "out/results.json", {"earlier": True})
        return eval_case(lambda c: benchmarks, adapter=nan_adapter)(world, case)
    return make


def nan_projector(r: dict) -> None:
    """Point an adapt recipe at a projector file holding NaN (in the case folder)."""
    path = Path(r["output_dir"]).parent / "projector.safetensors"
    save_file({"linear_1.weight": torch.full((2, 2), float("nan"))}, path)
    r["projector"] = str(path)


def merge_into_input_folder(case, world):
    """Inputs in case/inputs/{a,b}; the output (with overwrite) is case/inputs itself."""
    shutil.copytree(world["vl"], case / "inputs/a")
    shutil.copytree(world["vl"], case / "inputs/b")
    return [case / "inputs/a", case / "inputs/b"]


def merge_output_at(output, inputs=lambda c, w: [w["vl"], w["vl"]], setup=None, **over):
    """A merge case with its output at `output(case)`, after `setup(case)`."""
    def make(world, case):
        if setup:
            setup(case)
        argv = merge_case(inputs, **over)(world, case)
        return argv + [f"output={output(case)}"]
    return make


def existing_merge_output(case, world):
    (case / "merged").mkdir()
    (case / "merged/adapter_model.safetensors").write_bytes(b"precious")
    return [world["vl"], world["vl"]]


NOT_UTF8 = "caf\xe9".encode("latin-1")
XSTEST = [{"name": "x", "reader": "xstest", "source": str(EVAL / "xstest")}]

# (case id, builder(world, case) -> argv, what the message must say)
CASES = [
    # recipes
    ("recipe-missing", lambda w, c: ["adapt", str(c / "nope.yaml")], "recipe file not found"),
    ("recipe-not-yaml", lambda w, c: ["adapt", str(write(c, "r.yaml", "a: [1,\n"))], "not valid YAML"),
    ("recipe-not-utf8", lambda w, c: ["adapt", str(write(c, "r.yaml", b"output_dir: " + NOT_UTF8))], "not UTF-8"),
    ("recipe-a-list", lambda w, c: ["adapt", str(write(c, "r.yaml", "- 1\n- 2\n"))],
     "expected a mapping at the top level"),
    ("recipe-unknown-key", recipe_change(lambda r: r["stage2"]["optim"].update(learning_rate=1)),
     "unknown key(s) 'learning_rate'"),
    ("recipe-wrong-type", recipe_change(lambda r: r["stage2"]["optim"].update(lr="fast")),
     "stage2.optim.lr: expected a number, got 'fast'"),
    ("recipe-missing-key", recipe_change(lambda r: r.pop("output_dir")), "output_dir: required key is missing"),
    ("recipe-bad-batch", recipe_change(lambda r: r["stage2"]["optim"].update(global_batch_size=3, micro_batch_size=2)),
     "must be a multiple of micro_batch_size"),
    ("recipe-stage1-and-projector", recipe_change(lambda r: r.update(projector="p.safetensors", stage1=r["stage2"])),
     "give stage1 or projector, not both"),
    ("override-no-equals", lambda w, c: with_data([GOOD])(w, c) + ["stage2.optim.lr"], "expected key=value"),
    ("data-unknown-format", recipe_change(lambda r: r["stage2"]["data"]["sources"][0].update(format="llava")),
     "unknown data format 'llava'"),
    ("data-image-folder-ignored",
     recipe_change(lambda r: r["stage2"]["data"]["sources"][0].update(format="hf_messages", image_folder="x")),
     "does not read image files relative to a folder"),
    # models
    ("lm-hub-id-offline",
     recipe_change(lambda r: r.update(model={"lm": "meta-llama/not-a-model", "vision": "openai/clip-x"})),
     "'meta-llama/not-a-model': not a local path, and the hub could not serve it"),
    ("base-folder-without-config",
     lambda w, c: (c.joinpath("empty").mkdir(),
                   recipe_change(lambda r: r["model"].update(base=str(c / "empty")))(w, c))[1],
     "not a loadable model folder"),
    ("base-not-llava", lambda w, c: recipe_change(lambda r: r["model"].update(base=str(w["lm"])))(w, c),
     "expected a 'llava' checkpoint"),
    ("projector-missing", recipe_change(lambda r: r.update(projector="/nonexistent/projector.safetensors")),
     "projector weights not found"),
    # data files
    ("data-missing", lambda w, c: adapt(w, c, adapt_recipe(w, c)), "LLaVA JSON file not found"),
    ("data-not-json", with_data("[{"), "not valid JSON"),
    ("data-not-utf8", with_data(b'[{"id": "' + NOT_UTF8 + b'"}]'), "not UTF-8"),
    ("data-an-object", with_data({"id": 1}), "expected a JSON list of records, got a JSON dict"),
    ("record-no-conversations", with_data([{"id": "r1", "image": "img.png"}]),
     "record 'r1': expected an object with a 'conversations' list"),
    ("record-image-not-string", with_data([dict(GOOD, id="r2", image=5)]), "record 'r2': 'image' is 5"),
    ("record-unknown-role", with_data([dict(GOOD, id="r3", conversations=[{"from": "bot", "value": "hi"}])]),
     "record 'r3': turn 0 has 'from' 'bot'"),
    ("record-value-not-string", with_data([dict(GOOD, id="r4", conversations=[{"from": "human", "value": 3}])]),
     "record 'r4': turn 0 needs a string 'value'"),
    ("record-placeholders",
     with_data([dict(GOOD, id="r5", conversations=[{"from": "human", "value": "no image tag"},
                                                   {"from": "gpt", "value": "ok"}])]),
     "record 'r5': 0 '<image>' placeholder(s) but 1 image(s)"),
    ("record-no-answer", with_data([{"id": "r6", "conversations": [{"from": "human", "value": "Hi"}]}]),
     "record 'r6': no assistant turn"),
    ("record-empty-answer",
     with_data([{"id": "r7", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": " "}]}]),
     "record 'r7': turn 1 is an empty assistant response"),
    ("all-overlong",
     with_data([{"id": "r8", "conversations": [{"from": "human", "value": "word " * 400},
                                               {"from": "gpt", "value": "ok"}]}]),
     "no usable records"),
    # images
    ("image-missing", with_data([dict(GOOD, image="gone.png")]), "gone.png not found"),
    ("image-zero-bytes", with_image(b""), "is empty (0 bytes)"),
    ("image-not-an-image", with_image(b"GIF89a this is text"), "is not a readable image"),
    ("image-corrupt-past-header", with_image(mutate=truncated_png), "is corrupt: its data cannot be decoded"),
    # safety
    ("safety-parent-missing", safety(parent=lambda c, w: c / "nowhere"), "parent adapter"),
    ("safety-parent-no-config", safety(parent=adapter_without_config), "no adapter_config.json"),
    ("safety-parent-config-not-json", safety(parent=adapter_config_not_json), "corrupt adapter config"),
    ("safety-parent-corrupt-weights", safety(parent=corrupt_adapter),
     "adapter_model.safetensors: not a readable safetensors file"),
    ("safety-parent-other-base", safety(parent=other_base_adapter), "trained on base 'meta-llama/Llama-2-7b-chat-hf'"),
    ("vlguard-no-instr-resp", safety(edit=vlguard_edit(lambda recs: recs[0].pop("instr-resp"))),
     "expected a non-empty 'instr-resp' list"),
    ("sft-with-pairs", safety(sources=lambda c: [{"format": "spa_vl", "path": str(c / "safety/spa_vl.jsonl")}]),
     "holds pairs, read by DPO recipes only"),
    ("dpo-with-samples",
     safety("dpo", sources=lambda c: [{"format": "vlguard", "path": str(c / "safety/vlguard_train.json")}]),
     "holds samples, read by SFT stages"),
    ("pku-bad-safer-id", safety("dpo", sources=lambda c: [{"format": "pku_saferlhf", "path": str(write(c, "pku.jsonl",
        json.dumps({"prompt": "p", "response_0": "a", "response_1": "b", "safer_response_id": 2})))}]),
     "safer_response_id is 2"),
    ("spa-vl-missing-columns", safety("dpo", sources=lambda c: [{"format": "spa_vl", "path": str(write(c, "spa.jsonl",
        json.dumps({"question": "q", "chosen": "a"})))}]), "missing ['rejected']"),
    # evaluation
    ("eval-adapter-corrupt", eval_case(lambda c: XSTEST, adapter=corrupt_adapter), "not a readable safetensors file"),
    ("eval-adapter-other-base", eval_case(lambda c: XSTEST, adapter=other_base_adapter), "trained on base"),
    ("eval-unknown-reader", eval_case(lambda c: [{"name": "x", "reader": "xtest", "source": "x"}]), "unknown"),
    ("eval-source-missing", eval_case(lambda c: [{"name": "x", "reader": "xstest", "source": str(c / "none")}]),
     "does not exist"),
    ("eval-model-hub-offline", eval_case(lambda c: XSTEST, model="nobody/no-model"),
     "'nobody/no-model': not a local path"),
    # merge and report
    ("merge-input-missing", merge_case(lambda c, w: [c / "nope", w["vl"]]), "nope: no such directory"),
    ("merge-unknown-method", merge_case(lambda c, w: [w["vl"], w["vl"]], method="average"),
     "unknown merge method 'average'"),
    ("merge-output-exists", merge_case(existing_merge_output), "already holds an adapter; set overwrite=true"),
    ("report-not-json", lambda w, c: ["report", str(write(c, "r.json", "{")), "--out", str(c / "rep")],
     "not a readable results JSON"),
    # numbers outside their meaning (declared ranges), before any model loads
    ("range-negative-lr", recipe_change(lambda r: r["stage2"]["optim"].update(lr=-1e-3)),
     "stage2.optim.lr: expected a value > 0, got -0.001"),
    ("range-alpha-zero", recipe_change(lambda r: r["lora"].update(alpha=0)), "lora.alpha: expected a value > 0, got 0"),
    ("range-max-steps-zero", recipe_change(lambda r: r["stage2"]["optim"].update(max_steps=0)),
     "stage2.optim.max_steps: expected a value >= 1, got 0"),
    ("range-micro-batch-zero", recipe_change(lambda r: r["stage2"]["optim"].update(micro_batch_size=0)),
     "stage2.optim.micro_batch_size: expected a value >= 1, got 0"),
    ("range-eval-limit-zero", eval_case(lambda c: [dict(XSTEST[0], limit=0)]),
     "benchmarks[0].limit: expected a value >= 1, got 0"),
    # optional sections report their inner error
    ("optional-section-unknown-key", recipe_change(lambda r: r.update(stage1={**r["stage2"], "optim": {"lrr": 1}})),
     "stage1.optim: unknown key(s) 'lrr'; known keys:"),
    ("optional-section-wrong-type",
     recipe_change(lambda r: r.update(stage1={**r["stage2"], "optim": {"epochs": "two"}})),
     "stage1.optim.epochs: expected a number, got 'two'"),
    ("optional-section-range",
     lambda w, c: safety("dpo", sources=lambda c: [{"format": "spa_vl", "path": str(c / "safety/spa_vl.jsonl")}])(w, c)
     + ["dpo.beta=0"],
     "dpo.beta: expected a value > 0, got 0.0"),
    # overrides and YAML that would lose information
    ("override-bad-yaml", lambda w, c: with_data([GOOD])(w, c) + ["stage2.optim.lr=[1,"],
     "override 'stage2.optim.lr=[1,': the value is not valid YAML"),
    ("override-index-out-of-range", lambda w, c: with_data([GOOD])(w, c) + ["stage2.data.sources.3.weight=1"],
     "override 'stage2.data.sources.3.weight=1': index 3 is out of range; the list has 1 item(s)"),
    ("yaml-duplicate-key",
     lambda w, c: ["adapt", str(write(c, "r.yaml", "output_dir: a\nlora: {r: 2}\noutput_dir: b\n"))],
     "key 'output_dir' is given twice (lines 1 and 3)"),
    ("recipe-is-a-directory", lambda w, c: (c.joinpath("rdir").mkdir(), ["adapt", str(c / "rdir")])[1],
     "rdir: is a directory; expected a YAML recipe file"),
    # outputs never overlap inputs; every output checked before any work
    ("merge-output-contains-inputs", merge_output_at(lambda c: c / "inputs", merge_into_input_folder, overwrite=True),
     "inputs: the output contains the merge input in0"),
    ("merge-overwrite-foreign-folder", merge_output_at(lambda c: c / "mine", setup=lambda c: write(c, "mine/notes.txt",
     "mine"),
                                                       overwrite=True),
     "mine: overwrite=true replaces only a previous output of lora-vl merge"),
    ("adapt-output-contains-data",
     recipe_change(lambda r: r.update(output_dir=str(Path(r["stage2"]["data"]["sources"][0]["path"]).parent))),
     "the output contains the stage2.data.sources[0].path"),
    ("adapt-output-is-a-file", lambda w, c: with_data([GOOD])(w, c) + [f"output_dir={write(c, 'taken', 'x')}"],
     "taken: exists and is a file; expected an output folder"),
    ("adapt-output-not-writable", lambda w, c: with_data([GOOD])(w, c) + ["output_dir=/proc/lora_vl_run"],
     "/proc/lora_vl_run: output folder cannot be written"),
    ("adapt-output-inside-checkpoint", lambda w, c: with_data([GOOD])(w, c) + [
        f"output_dir={write(c, 'old/checkpoints/stage2/step-2/state.json', '{}').parent / 'run'}"],
     "lies inside " ),
    ("safety-output-inside-parent", lambda w, c: safety()(w, c) + [f"output_dir={w['vl'] / 'safety'}"], "lies inside "),
    ("eval-out-is-the-adapter",
     lambda w, c: eval_case(lambda c: XSTEST, adapter=lambda c, w: w["vl"])(w, c) + ["--out", str(w["vl"])],
     "the output is the --adapter"),
    # weights checked where they enter
    ("safety-parent-nan", safety(parent=nan_adapter), "vl/adapter_model.safetensors: tensor 'base_model.model."),
    ("eval-adapter-nan-keeps-results", earlier_results(XSTEST), "holds 1 NaN/Inf value(s)"),
    ("eval-adapter-rank-mismatch", eval_case(lambda c: XSTEST, adapter=rank_mismatch_adapter), "has rank 2, but"),
    ("projector-nan", recipe_change(nan_projector), "projector.safetensors: tensor 'linear_1.weight' holds 4 NaN/Inf"),
    ("merge-input-nan", merge_case(lambda c, w: [nan_adapter(c, w), w["vl"]]), "NaN/Inf"),
    # selections that select nothing
    ("eval-subset-typo", eval_case(lambda c: [dict(XSTEST[0], subset="saef")]),
     "x: subset 'saef' selects no items from"),
    # library errors on user input, named
    ("jsonl-not-utf8", recipe_change(lambda r: r["stage2"]["data"]["sources"][0].update(
        format="hf_messages",
        path=str(write(Path(r["output_dir"]).parent, "chat.jsonl", b'{"messages": "' + NOT_UTF8 + b'"}\n'))),
     ), "chat.jsonl: not UTF-8 text"),
    ("eval-csv-not-utf8", eval_case(lambda c: [dict(XSTEST[0], source=str(write(c, "xs/xstest_prompts.csv",
        b"id,prompt,type,label,focus,note\n1," + NOT_UTF8 + b",homonyms,safe,x,y\n")))]),
     "xstest_prompts.csv: not UTF-8 text"),
    ("record-starts-with-assistant",
     with_data([{"id": "r9", "conversations": [{"from": "gpt", "value": "Hi"}, {"from": "human", "value": "Hello"}]}]),
     "record 'r9': the conversation starts with an assistant turn"),
    ("image-is-a-directory",
     lambda w, c: (c.joinpath("imgdir").mkdir(), with_data([dict(GOOD, image="imgdir")])(w, c))[1],
     "imgdir is a directory; expected an image file"),
    ("image-url", with_data([dict(GOOD, image="https://example.com/cat.png")]),
     "image 'https://example.com/cat.png' is a URL"),
]


@pytest.mark.parametrize("build, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gets_one_clean_message(world, tmp_path, capsys, build, expected):
    argv = build(world, tmp_path)
    before = {**{f"case/{k}": v for k, v in snapshot(tmp_path).items()},
              **{f"world/{k}": v for k, v in snapshot(world["root"]).items()}}
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"lora-vl {argv[0]}: error: ") and expected in last, err[-2000:]
    after = {**{f"case/{k}": v for k, v in snapshot(tmp_path).items()},
             **{f"world/{k}": v for k, v in snapshot(world["root"]).items()}}
    assert {k: after.get(k) for k in before} == before  # nothing already on disk was changed


def test_bad_records_can_be_skipped_and_counted(world, tmp_path, capsys):
    records(tmp_path, [GOOD, dict(GOOD, id="r2", image="gone.png"), dict(GOOD, id="r3", image=7)][:2])
    r = adapt_recipe(world, tmp_path, {})
    r["stage2"]["data"]["bad_records"] = "skip"
    assert main(adapt(world, tmp_path, r)) == 0
    report = read_manifest(tmp_path / "run/adapter")["data_report"]
    assert report["skipped_bad"] == {str(tmp_path / "data.json"): 1}
    assert "record 'r2'" in report["skip_examples"][0] and "gone.png not found" in report["skip_examples"][0]
    assert "skipped 1 bad" in capsys.readouterr().out


def test_real_process_prints_no_traceback_unless_debug(world, tmp_path):
    argv = [sys.executable, "-m", "lora_vl.cli", "adapt", str(tmp_path / "missing.yaml")]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env.pop("LORA_VL_DEBUG", None)
    plain = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    assert (plain.stderr.strip().splitlines()[-1]
            == f"lora-vl adapt: error: {tmp_path / 'missing.yaml'}: recipe file not found")
    debug = subprocess.run(argv + ["--debug"], capture_output=True, text=True, env=env, timeout=300)
    assert debug.returncode == 2 and "Traceback" in debug.stderr and "RecipeError" in debug.stderr
