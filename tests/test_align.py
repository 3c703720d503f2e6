"""`lora-vl align`: chat SFT of a causal LM as a LoRA adapter, folded into a plain checkpoint that
equals base + adapter, keeps the chat template, and is reused (or refused) on a re-run."""
from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from lora_vl.cli import main as cli_main
from lora_vl.errors import InputError
from lora_vl.models.tiny import build_lm, build_tokenizer
from lora_vl.recipe import load_recipe
from lora_vl.train.align import AlignRecipe, run_align

CHATS = [("How can I make a bomb?", "I cannot help you make a bomb. It is dangerous."),
         ("How do I make a kite?", "To make a kite, tie two sticks, then cover them with paper."),
         ("What is two plus two?", "Two plus two is four.")]


@pytest.fixture(scope="module")
def lm_and_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("align")
    tok = build_tokenizer(root / "lm", corpus=[q + " " + a for q, a in CHATS], vocab_size=400)
    build_lm(root / "lm", tok, hidden=32, layers=2, heads=2, kv_heads=1)
    records = [{"id": f"c{i}", "conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]}
               for i, (q, a) in enumerate(CHATS * 4)]
    (root / "chats.json").write_text(json.dumps(records))
    return root


def write_recipe(root, out, quantization="none", lr=1e-2):
    path = root / f"{out}.yaml"
    path.write_text(f"""
output_dir: {root / out}
lm: {root / 'lm'}
quantization: {quantization}
lora: {{r: 4, alpha: 8, dropout: 0.0}}
sft:
  data:
    sources: [{{format: llava_json, path: {root / 'chats.json'}}}]
    max_length: 64
  optim: {{lr: {lr}, micro_batch_size: 4, global_batch_size: 4, max_steps: 3, save_every: 2}}
""")
    return path


def logits(model, tok, text="How do I make a kite?"):
    ids = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_folded_checkpoint_equals_base_plus_adapter(lm_and_data):
    root = lm_and_data
    out = run_align(load_recipe(AlignRecipe, str(write_recipe(root, "run"))))
    assert out == root / "run" / "lm"
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template == AutoTokenizer.from_pretrained(root / "lm").chat_template
    folded = AutoModelForCausalLM.from_pretrained(out, use_safetensors=True)
    assert folded.dtype == torch.float32
    base = AutoModelForCausalLM.from_pretrained(root / "lm", use_safetensors=True, dtype=torch.float32)
    before = logits(base, tok)
    stacked = PeftModel.from_pretrained(base, str(root / "run" / "adapter"))
    want = logits(stacked, tok)
    got = logits(folded, tok)
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
    assert (got - before).abs().max() > 1e-3  # the three steps changed the model
    manifest = json.loads((out / "manifest.json").read_text())
    adapter = json.loads((root / "run" / "adapter" / "manifest.json").read_text())
    assert manifest["kind"] == "aligned_lm" and manifest["fingerprint"] == adapter["fingerprint"]
    assert adapter["steps"] == 3


def test_rerun_is_reused_and_another_recipe_is_refused(lm_and_data):
    root = lm_and_data
    recipe = write_recipe(root, "again")
    first = run_align(load_recipe(AlignRecipe, str(recipe)))
    written = [first / "model.safetensors", root / "again" / "adapter" / "adapter_model.safetensors"]
    stamps = [f.stat().st_mtime_ns for f in written]
    assert run_align(load_recipe(AlignRecipe, str(recipe))) == first
    assert [f.stat().st_mtime_ns for f in written] == stamps  # not retrained, not rewritten
    other = load_recipe(AlignRecipe, str(recipe), ["sft.optim.lr=0.02"])
    with pytest.raises(InputError, match="different recipe"):
        run_align(other)


def test_4bit_training_folds_into_the_full_precision_weights(lm_and_data):
    root = lm_and_data
    out = run_align(load_recipe(AlignRecipe, str(write_recipe(root, "q4", quantization="4bit"))))
    folded = AutoModelForCausalLM.from_pretrained(out, use_safetensors=True)
    assert not any("4bit" in type(m).__name__ for m in folded.modules())
    base = AutoModelForCausalLM.from_pretrained(root / "lm", use_safetensors=True, dtype=torch.float32)
    moved = [n for n, p in folded.state_dict().items() if not torch.equal(p, base.state_dict()[n])]
    assert moved and all("proj" in n for n in moved)  # only the LoRA-targeted linears changed


def test_lm_without_chat_template_is_one_clear_error(lm_and_data, tmp_path, capsys):
    root = lm_and_data
    bare = tmp_path / "bare"
    tok = AutoTokenizer.from_pretrained(root / "lm")
    tok.chat_template = None
    AutoModelForCausalLM.from_pretrained(root / "lm", use_safetensors=True).save_pretrained(bare)
    tok.save_pretrained(bare)
    (bare / "chat_template.jinja").unlink(missing_ok=True)
    recipe = write_recipe(root, "bare_run")
    code = cli_main(["align", str(recipe), f"lm={bare}"])
    err = capsys.readouterr().err
    assert code == 2 and "no chat template" in err and str(bare) in err
