"""Labels: -100 exactly on non-assistant tokens, under each chat template; image tokens."""
import pytest
from PIL import Image
from transformers import AutoProcessor

from lora_vl.data.encode import IGNORE, BadRecord, Overlong, encode_chat

# (tiny base, the template its LM ships, how one assistant turn renders)
TEMPLATES = {
    "llama2": (("llama", "clip"), lambda c: f" {c} </s>"),
    "tulu2": (("mistral", "clip"), lambda c: f"{c}</s>\n"),
    "chatml": (("qwen2", "siglip"), lambda c: f"{c}<|im_end|>\n"),
}
ANSWERS = ["It is a circle.", "It is red."]


def conv(with_image: bool, turns: int):
    q = ["What shape is in the image?", "What color is it?"]
    msgs = []
    for i in range(turns):
        msgs.append({"role": "user", "content": ("<image>\n" if with_image and i == 0 else "") + q[i]})
        msgs.append({"role": "assistant", "content": ANSWERS[i]})
    return msgs


@pytest.fixture(scope="module")
def processors(tiny_bases):
    return {name: AutoProcessor.from_pretrained(tiny_bases[combo]) for name, (combo, _) in TEMPLATES.items()}


@pytest.mark.parametrize("template", sorted(TEMPLATES))
@pytest.mark.parametrize("with_image", [False, True])
@pytest.mark.parametrize("turns", [1, 2])
def test_labels_only_on_assistant_tokens(processors, template, with_image, turns):
    proc = processors[template]
    render = TEMPLATES[template][1]
    images = [Image.new("RGB", (32, 32), "blue")] if with_image else []
    enc = encode_chat(proc, conv(with_image, turns), images)
    tok = proc.tokenizer
    learned = [t for t, l in zip(enc.input_ids, enc.labels) if l != IGNORE]
    assert tok.decode(learned) == "".join(render(a) for a in ANSWERS[:turns])
    for t, l in zip(enc.input_ids, enc.labels):
        assert l in (IGNORE, t)
    # the prompt part (everything before the first assistant token) is never learned
    first = next(i for i, l in enumerate(enc.labels) if l != IGNORE)
    prompt = tok.decode(enc.input_ids[:first]).replace("<image>", "")
    assert "shape" in prompt and ANSWERS[0] not in prompt
    image_id = tok.convert_tokens_to_ids("<image>")
    assert all(l == IGNORE for t, l in zip(enc.input_ids, enc.labels) if t == image_id)


def test_generation_prompt_has_no_labels(processors):
    enc = encode_chat(processors["chatml"], conv(False, 1)[:1], [], add_generation_prompt=True)
    assert all(l == IGNORE for l in enc.labels)
    assert processors["chatml"].tokenizer.decode(enc.input_ids).endswith("<|im_start|>assistant\n")


def test_truncation_never_splits_image_tokens(processors):
    proc = processors["llama2"]
    msgs = conv(True, 2)
    img = [Image.new("RGB", (32, 32))]
    full = encode_chat(proc, msgs, img)
    image_id = proc.tokenizer.convert_tokens_to_ids("<image>")
    last_image = max(i for i, t in enumerate(full.input_ids) if t == image_id)
    with pytest.raises(Overlong, match="split image tokens"):
        encode_chat(proc, msgs, img, max_length=last_image - 2, truncate=True)
    with pytest.raises(Overlong, match="max_length"):
        encode_chat(proc, msgs, img, max_length=len(full.input_ids) - 1)  # drop is the default
    cut = encode_chat(proc, msgs, img, max_length=len(full.input_ids) - 3, truncate=True)
    assert cut.input_ids == full.input_ids[: len(full.input_ids) - 3]
    assert sum(t == image_id for t in cut.input_ids) == sum(t == image_id for t in full.input_ids)


@pytest.mark.parametrize("msgs,n_images,match", [
    ([{"role": "user", "content": "hi"}], 0, "no assistant turn"),
    ([{"role": "user", "content": "<image> <image> hi"}, {"role": "assistant", "content": "a"}], 1,
     "2 '<image>' placeholder"),
    ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "a"}], 1, "0 '<image>' placeholder"),
    ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": " "}], 0, "empty assistant"),
])
def test_bad_records_are_named(processors, msgs, n_images, match):
    with pytest.raises(BadRecord, match=match) as e:
        encode_chat(processors["llama2"], msgs, [Image.new("RGB", (8, 8))] * n_images, where="f.json record 'x'")
    assert "f.json record 'x'" in str(e.value)
