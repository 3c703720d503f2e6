"""Composition: a standard Llava from any LM + CLIP/SigLIP; saves and reloads identically."""
import pytest
import torch
from PIL import Image
from transformers import LlavaForConditionalGeneration

from lora_vl.data.encode import encode_chat
from lora_vl.models.compose import ComposeSpec, compose, num_image_tokens
from lora_vl.models.load import load_vlm
from tests.conftest import COMBOS

MSGS = [{"role": "user", "content": "<image>\nWhat shape is in the image?"},
        {"role": "assistant", "content": "It is a circle."}]


@pytest.mark.parametrize("combo", COMBOS, ids=lambda c: "-".join(c))
def test_compose_save_reload_identical(tiny_bases, combo):
    base = tiny_bases[combo]
    model, proc = load_vlm(base, quantization="none")
    assert isinstance(model, LlavaForConditionalGeneration)
    enc = encode_chat(proc, MSGS, [Image.new("RGB", (40, 30), "red")])
    # the placeholder expands to exactly the encoder's feature count
    n_img = sum(t == model.config.image_token_index for t in enc.input_ids)
    assert n_img == model.config.image_seq_length == num_image_tokens(
        model.config.vision_config, model.config.vision_feature_select_strategy)
    # LlavaProcessor expands the same way
    via_proc = proc(text=["<image>"], images=[Image.new("RGB", (40, 30))], return_tensors="pt")
    assert int((via_proc["input_ids"] == model.config.image_token_index).sum()) == n_img
    again, _ = load_vlm(base, quantization="none")
    x = dict(input_ids=torch.tensor([enc.input_ids]), pixel_values=enc.pixel_values)
    with torch.no_grad():
        assert torch.equal(model(**x).logits, again(**x).logits)


def test_select_strategy_per_encoder(tiny_bases):
    clip, _ = load_vlm(tiny_bases[("llama", "clip")], quantization="none")
    sig, _ = load_vlm(tiny_bases[("llama", "siglip")], quantization="none")
    assert clip.config.vision_feature_select_strategy == "default"   # LLaVA-1.5: drop CLS
    assert sig.config.vision_feature_select_strategy == "full"       # SigLIP has no CLS
    assert clip.config.vision_feature_layer == -2


def test_siglip_with_default_strategy_is_refused(tiny_parts):
    p = tiny_parts[("qwen2", "siglip")]
    with pytest.raises(ValueError, match="SigLIP has none"):
        compose(ComposeSpec(lm=str(p["lm"]), vision=str(p["vision"]), dtype="float32",
                            vision_feature_select_strategy="default"))


def test_chat_template_choice(tiny_parts):
    p = tiny_parts[("llama", "clip")]
    _, proc = compose(ComposeSpec(lm=str(p["lm"]), vision=str(p["vision"]), dtype="float32",
                                  chat_template="tulu2"))
    text = proc.tokenizer.apply_chat_template(MSGS, tokenize=False)
    assert text.startswith("<s><|user|>\n<image>")  # Tulu-2 text starts with BOS (open-instruct)
    with pytest.raises(ValueError, match="unknown template"):
        compose(ComposeSpec(lm=str(p["lm"]), vision=str(p["vision"]), chat_template="vicuna"))
