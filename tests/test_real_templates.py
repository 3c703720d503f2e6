"""Chat templates brought by real tokenizers (SmolLM2's ChatML, Phi-3's own), with no format
written by the kit: labels exactly on the assistant tokens, the image placed as LLaVA places it,
generation prompts rendered by the tokenizer's template; no template → what to set."""
from pathlib import Path

import pytest
from PIL import Image
from transformers import AutoTokenizer, CLIPImageProcessor, LlavaProcessor

from lora_vl.data.encode import IGNORE, encode_chat
from lora_vl.errors import InputError
from lora_vl.models.templates import resolve_template
from real_lm import real_lm  # noqa: F401  (session fixture)

GGUF_TOKENIZERS = Path(__file__).parent / "fixtures" / "tokenizers"
CHAT = [{"role": "user", "content": "What is shown in the picture?\n<image>"},
        {"role": "assistant", "content": "A red circle."},
        {"role": "user", "content": "Are you sure?"},
        {"role": "assistant", "content": "Yes, it is red."}]
# family: (end of an assistant turn as its tokens decode, header of a user turn). Phi-3's tokenizer
# puts a '▁' piece before a newline that follows a special token (29871, 13): it decodes as ' \n'
FAMILY = {"chatml": ("<|im_end|>\n", "<|im_start|>user\n"), "phi3": ("<|end|> \n", "<|user|> \n")}


def processor(tokenizer) -> LlavaProcessor:
    # `<image>` added as compose.add_image_token adds it (no LM to resize here)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    tokenizer.chat_template = resolve_template("auto", tokenizer)
    ip = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return LlavaProcessor(image_processor=ip, tokenizer=tokenizer, patch_size=8,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1)


@pytest.fixture(params=["chatml", "phi3"])
def family(request, real_lm):
    if request.param == "chatml":  # SmolLM2-135M-Instruct's own tokenizer and template
        return "chatml", processor(AutoTokenizer.from_pretrained(real_lm))
    tok = AutoTokenizer.from_pretrained(GGUF_TOKENIZERS, gguf_file="ggml-vocab-phi-3.gguf")
    return "phi3", processor(tok)


def runs(ids, labels):
    """The labelled token runs, in order."""
    out, cur = [], []
    for t, label in zip(ids, labels):
        if label != IGNORE:
            assert label == t
            cur.append(t)
        elif cur:
            out, cur = out + [cur], []
    return out + [cur] if cur else out


def test_labels_are_exactly_the_assistant_turns(family):
    name, proc = family
    end, _ = FAMILY[name]
    enc = encode_chat(proc, CHAT, [Image.new("RGB", (32, 32), "red")])
    decoded = [proc.tokenizer.decode(r) for r in runs(enc.input_ids, enc.labels)]
    assert decoded == ["A red circle." + end, "Yes, it is red." + end]


def test_image_first_in_its_turn_and_prompt_rendered_by_the_template(family):
    name, proc = family
    tok = proc.tokenizer
    image_id = tok.convert_tokens_to_ids("<image>")
    enc = encode_chat(proc, CHAT[:1], [Image.new("RGB", (32, 32), "red")], add_generation_prompt=True)
    assert all(label == IGNORE for label in enc.labels)
    first = enc.input_ids.index(image_id)
    n = enc.input_ids.count(image_id)
    assert n == 16 and enc.input_ids[first:first + n] == [image_id] * n  # (32/8)^2 patches, CLS dropped
    assert tok.decode(enc.input_ids[:first]).endswith(FAMILY[name][1])  # LLaVA: '<image>\n' opens the turn
    collapsed = enc.input_ids[:first + 1] + enc.input_ids[first + n:]
    moved = [{"role": "user", "content": "<image>\nWhat is shown in the picture?"}]
    rendered = tok.apply_chat_template(moved, tokenize=False, add_generation_prompt=True)
    assert collapsed == tok(rendered, add_special_tokens=False)["input_ids"]  # the template's own prompt


def test_a_tokenizer_without_template_says_what_to_set():
    tok = AutoTokenizer.from_pretrained(GGUF_TOKENIZERS, gguf_file="ggml-vocab-llama-spm.gguf")
    with pytest.raises(InputError, match=r"has no chat template; set model.chat_template to one of "
                                         r"\['chatml', .*chat_template.jinja"):
        resolve_template("auto", tok)
