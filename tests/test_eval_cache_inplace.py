"""An adapter retrained into the same folder (new weights file, same path, even the same size and
modification time) is a new model: its generations are made anew, never served from the cache
of the old weights."""
import os
import shutil

from eval_helpers import FIXTURES, tiny_world  # noqa: F401  (session fixture)
from safetensors.torch import load_file, save_file

from lora_vl.evaluation.cache import GenerationCache
from lora_vl.evaluation.run import run_suite
from lora_vl.evaluation.suite import Suite
from lora_vl.recipe import build

SUITE = {"name": "inplace", "generation": {"batch_size": 3, "max_new_tokens": 8},
         "judges": [{"name": "kw", "kind": "refusal"}],
         "benchmarks": [{"name": "xstest", "reader": "xstest", "source": str(FIXTURES / "xstest"),
                         "subset": "all", "judges": ["kw"]}]}


def answers(base, adapter, out, generated=None):
    res = run_suite(build(Suite, SUITE), base, [str(adapter)], out, device="cpu",
                    on_batch=(generated.extend if generated is not None else None))
    cache = GenerationCache(out / "generations.jsonl")
    fp = res["model"]["fingerprint"]
    return fp, {key[2]: rec["response"] for key, rec in cache.records.items() if key[0] == fp}


def rewrite_in_place(adapter):
    """New LoRA weights in the same file: same keys, shapes and size, the old mtime put back."""
    weights = adapter / "adapter_model.safetensors"
    stat = weights.stat()
    tensors = load_file(str(weights))
    changed = {k: (-4.0 * t if "lora_B" in k else t) for k, t in tensors.items()}
    save_file(changed, str(weights), metadata={"format": "pt"})  # as PEFT writes it
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert weights.stat().st_size == stat.st_size and weights.stat().st_mtime_ns == stat.st_mtime_ns


def test_weights_changed_in_place_are_generated_anew(tiny_world, tmp_path):
    base = str(tiny_world["llava"])
    adapter = tmp_path / "adapter"
    shutil.copytree(tiny_world["adapter"], adapter)
    old_fp, old = answers(base, adapter, tmp_path / "run")
    assert len(old) == 3

    rewrite_in_place(adapter)
    generated = []
    new_fp, new = answers(base, adapter, tmp_path / "run", generated)
    assert new_fp != old_fp
    assert sorted(generated) == sorted(old)  # every item generated again, none served from the cache
    # what the new weights answer, computed without any cache: a fresh output folder
    _, fresh = answers(base, adapter, tmp_path / "fresh")
    assert new == fresh
    assert new != old  # the change shows in the answers, so a stale cache could not pass
