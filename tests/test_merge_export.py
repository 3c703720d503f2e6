"""Export: merged checkpoints whose logits equal base + ΔW; NF4 folding; baked projector."""
import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

from lora_vl.cli import main as lora_vl
from lora_vl.merge.export import nf4_roundtrip, quantizable_linears
from merge_helpers import LLAVA_TARGETS, peft_adapter, tiny_llama, tiny_llava
from tests.helpers import assert_model_card

IDS = torch.tensor([[1, 5, 9, 2, 7, 3]])


def main(argv: list[str]) -> int:
    """`lora-vl merge ...` through the real CLI (its error policy included)."""
    return lora_vl(["merge", *argv])


@pytest.fixture
def llama_base(tmp_path):
    base = tmp_path / "base"
    tiny_llama().save_pretrained(base)
    adapter = peft_adapter(tiny_llama(), tmp_path / "adapter", seed=1, base=str(base))
    return base, adapter


def peft_logits(base, adapter, cls=AutoModelForCausalLM, **inputs):
    model = PeftModel.from_pretrained(cls.from_pretrained(base, dtype=torch.float32), str(adapter)).eval()
    with torch.no_grad():
        return model(**inputs).logits


def test_full_export_logits_equal_base_plus_delta(tmp_path, llama_base):
    base, adapter = llama_base
    out = tmp_path / "full"
    args = ["export", "--adapter", str(adapter), "--base", str(base), "--output", str(out)]
    assert main(args + ["--dtype", "float32"]) == 0
    assert_model_card(out, library="transformers")
    with torch.no_grad():
        got = AutoModelForCausalLM.from_pretrained(out).eval()(IDS).logits
    torch.testing.assert_close(got, peft_logits(base, adapter, input_ids=IDS), rtol=1e-4, atol=1e-4)
    assert main(args) == 2  # exists: refused
    assert main(args + ["--overwrite"]) == 0
    bf16 = AutoModelForCausalLM.from_pretrained(out)
    assert bf16.dtype == torch.bfloat16


def test_nf4_fold_uses_dequantized_weights(tmp_path, llama_base):
    base, adapter = llama_base
    out = tmp_path / "nf4"
    assert main(["export", "--adapter", str(adapter), "--base", str(base), "--output", str(out),
                 "--fold-into", "nf4", "--dtype", "float32"]) == 0
    ref_base = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    with torch.no_grad():
        for _, lin in quantizable_linears(ref_base):
            lin.weight.copy_(nf4_roundtrip(lin.weight))
    ref = PeftModel.from_pretrained(ref_base, str(adapter)).eval()
    with torch.no_grad():
        got = AutoModelForCausalLM.from_pretrained(out).eval()(IDS).logits
        torch.testing.assert_close(got, ref(IDS).logits, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(got, peft_logits(base, adapter, input_ids=IDS), atol=1e-4)


def test_nf4_roundtrip_is_lossy_but_close():
    torch.manual_seed(0)
    w = torch.randn(64, 64) * 0.02
    rt = nf4_roundtrip(w)
    assert not torch.equal(rt, w) and (rt - w).abs().max() < 0.01


def test_baked_projector_export_for_llava(tmp_path):
    base = tmp_path / "llava"
    tiny_llava().save_pretrained(base)
    adapter = peft_adapter(tiny_llava(), tmp_path / "adapter", seed=2, base=str(base),
                           target_modules=LLAVA_TARGETS, modules_to_save=["multi_modal_projector"])
    out = tmp_path / "baked"
    assert main(["export", "--adapter", str(adapter), "--base", str(base), "--output", str(out),
                 "--format", "baked", "--dtype", "float32"]) == 0
    assert (out / "adapter" / "adapter_config.json").read_text().count("multi_modal_projector") == 0
    inputs = {"input_ids": torch.tensor([[1, 63, 63, 63, 63, 5, 9]]), "pixel_values": torch.randn(1, 3, 28, 28)}
    want = peft_logits(base, adapter, AutoModelForImageTextToText, **inputs)
    got = peft_logits(out / "base", out / "adapter", AutoModelForImageTextToText, **inputs)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_export_refuses_other_base(tmp_path, llama_base):
    base, adapter = llama_base
    other = tmp_path / "other"
    tiny_llama(seed=5).save_pretrained(other)
    assert main(["export", "--adapter", str(adapter), "--base", str(other), "--output", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()
