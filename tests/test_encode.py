"""Labels: -100 exactly on non-assistant tokens, under each chat format; image tokens; a stage's
own chat format (`data.chat_format: plain`); the real Llama-2 tokenizer's boundaries."""
import json
from types import SimpleNamespace

import pytest
from PIL import Image
from transformers import CLIPImageProcessor, LlavaProcessor, SiglipImageProcessor
from upstream_code import llama2_tokenizer

from lora_vl.data.config import DataConfig, DataSource
from lora_vl.data.dataset import TrainSet
from lora_vl.data.encode import IGNORE, BadRecord, Overlong, encode_chat
from lora_vl.models.templates import TEMPLATES
from lora_vl.models.tiny import build_tokenizer

# (tiny tokenizer arch, its image processor, how answer k of n renders in the learned span)
FORMATS = {
    "llama2": ("llama", "clip", lambda c, last: f" {c} </s>"),
    "tulu2": ("mistral", "clip", lambda c, last: f"{c}</s>" + ("" if last else "\n")),
    "chatml": ("qwen2", "siglip", lambda c, last: f"{c}<|im_end|>\n"),
    "llava_llama_2": ("llama", "clip", lambda c, last: f" {c} </s>"),
    "llava_tulu2": ("mistral", "clip", lambda c, last: f"{c}</s>" + ("" if last else "\n")),
}
ANSWERS = ["It is a circle.", "It is red."]


def conv(with_image: bool, turns: int):
    q = ["What shape is in the image?", "What color is it?"]
    msgs = []
    for i in range(turns):
        msgs.append({"role": "user", "content": ("<image>\n" if with_image and i == 0 else "") + q[i]})
        msgs.append({"role": "assistant", "content": ANSWERS[i]})
    return msgs


def make_processor(tokenizer, vision: str):
    """LlavaProcessor as a composed base has it: CLIP drops its CLS feature, SigLIP has none."""
    if vision == "clip":
        ip = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
        return LlavaProcessor(image_processor=ip, tokenizer=tokenizer, patch_size=8,
                              vision_feature_select_strategy="default", num_additional_image_tokens=1)
    ip = SiglipImageProcessor(size={"height": 32, "width": 32})
    return LlavaProcessor(image_processor=ip, tokenizer=tokenizer, patch_size=8,
                          vision_feature_select_strategy="full", num_additional_image_tokens=0)


@pytest.fixture(scope="module")
def processors(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    out = {}
    for name, (arch, vision, _) in FORMATS.items():
        tok = build_tokenizer(root / name, arch=arch)
        tok.chat_template = TEMPLATES[name]
        out[name] = make_processor(tok, vision)
    return out


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("with_image", [False, True])
@pytest.mark.parametrize("turns", [1, 2])
def test_labels_only_on_assistant_tokens(processors, fmt, with_image, turns):
    proc = processors[fmt]
    render = FORMATS[fmt][2]
    images = [Image.new("RGB", (32, 32), "blue")] if with_image else []
    enc = encode_chat(proc, conv(with_image, turns), images)
    tok = proc.tokenizer
    learned = [t for t, label in zip(enc.input_ids, enc.labels) if label != IGNORE]
    assert tok.decode(learned) == "".join(render(a, i == turns - 1) for i, a in enumerate(ANSWERS[:turns]))
    for t, label in zip(enc.input_ids, enc.labels):
        assert label in (IGNORE, t)
    # the prompt part (everything before the first assistant token) is never learned
    first = next(i for i, label in enumerate(enc.labels) if label != IGNORE)
    prompt = tok.decode(enc.input_ids[:first]).replace("<image>", "")
    assert "shape" in prompt and ANSWERS[0] not in prompt
    image_id = tok.convert_tokens_to_ids("<image>")
    n_image = sum(t == image_id for t in enc.input_ids)
    assert n_image == (16 if with_image else 0)  # (32/8)^2 patches, CLS dropped or absent
    assert all(label == IGNORE for t, label in zip(enc.input_ids, enc.labels) if t == image_id)


def test_llava_formats_put_the_image_first(processors):
    msgs = [{"role": "user", "content": "What shape is in the image?\n<image>"},
            {"role": "assistant", "content": "A circle."}]
    text = processors["llava_llama_2"].tokenizer.apply_chat_template(msgs, tokenize=False)
    assert "<</SYS>>\n\n<image>\nWhat shape is in the image? [/INST] A circle. </s>" in text
    assert text.startswith("<s>[INST] <<SYS>>\nYou are a helpful language and vision assistant.")
    own = processors["llama2"].tokenizer.apply_chat_template(msgs, tokenize=False)
    assert own == "<s>[INST] What shape is in the image?\n<image> [/INST] A circle. </s>"  # the LM's own: as given


def test_generation_prompt_has_no_labels(processors):
    enc = encode_chat(processors["chatml"], conv(False, 1)[:1], [], add_generation_prompt=True)
    assert all(label == IGNORE for label in enc.labels)
    assert processors["chatml"].tokenizer.decode(enc.input_ids).endswith("<|im_start|>assistant\n")
    tulu = encode_chat(processors["tulu2"], conv(False, 1)[:1], [], add_generation_prompt=True)
    assert processors["tulu2"].tokenizer.decode(tulu.input_ids).endswith("<|assistant|>\n")


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


def write_llava_json(folder, records):
    (folder / "img.png").parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), "red").save(folder / "img.png")
    path = folder / "data.json"
    path.write_text(json.dumps(records))
    return path


def test_stage_chat_format_plain(processors, tmp_path):
    """data.chat_format: plain (LLaVA stage 1): <image> + caption, the instruction dropped, loss
    on the caption (and its newline); the default keeps the model's own template."""
    path = write_llava_json(tmp_path, [{"id": "p1", "image": "img.png", "conversations": [
        {"from": "human", "value": "Describe the image briefly.\n<image>"},
        {"from": "gpt", "value": "a red square"}]}])
    proc = processors["llama2"]
    tok = proc.tokenizer
    plain = TrainSet(DataConfig(sources=[DataSource(format="llava_json", path=str(path))], chat_format="plain"), proc)
    enc = plain[0]
    text = tok.decode(enc.input_ids)
    assert text.startswith("<s><image>") and "Describe" not in text and "[INST]" not in text
    assert tok.decode([t for t, label in zip(enc.input_ids, enc.labels) if label != IGNORE]) == "a red square\n"
    chat = TrainSet(DataConfig(sources=[DataSource(format="llava_json", path=str(path))]), proc)[0]
    assert "[INST]" in tok.decode(chat.input_ids) and "Describe" in tok.decode(chat.input_ids)


def test_plain_rejects_what_llava_would(processors, tmp_path):
    path = write_llava_json(tmp_path, [{"id": "t1", "conversations": [
        {"from": "human", "value": "no image here"}, {"from": "gpt", "value": "text"}]}])
    cfg = DataConfig(sources=[DataSource(format="llava_json", path=str(path))], chat_format="plain")
    with pytest.raises(BadRecord, match=r"record 't1'.*plain \(stage-1\) format takes one user turn with <image>"):
        TrainSet(cfg, processors["llama2"])


@pytest.mark.parametrize("fmt,learned", [
    ("llama2", ["▁It", "▁is", "▁red", ".", "▁", "</s>"]),
    ("tulu2", ["It", "▁is", "▁red", ".", "</s>"]),
])
def test_real_llama2_tokenizer_labels(fmt, learned):
    """With the real Llama-2 SentencePiece vocabulary: the answer's first piece and the end of turn
    are learned, nothing of the prompt is ('[/INST]' / '<|assistant|>\\n' stay unlabelled)."""
    tok = llama2_tokenizer()
    msgs = [{"role": "user", "content": "What color is it?"}, {"role": "assistant", "content": "It is red."}]
    enc = encode_chat(SimpleNamespace(tokenizer=tok), msgs, [], chat_template=TEMPLATES[fmt])
    toks = tok.convert_ids_to_tokens(enc.input_ids)
    assert [t for t, label in zip(toks, enc.labels) if label != IGNORE] == learned
    assert toks[:2] == (["<s>", "▁["] if fmt == "llama2" else ["<s>", "▁<"])  # fresh text after BOS


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("generation", [False, True])
def test_fast_render_equals_apply_chat_template(processors, fmt, generation):
    """encode.py renders with the compiled template directly (skipping apply_chat_template's
    per-call normalisation); the text must be the library's, under every template we ship."""
    from lora_vl.data.encode import _render
    from lora_vl.models.templates import PLAIN

    tok = processors[fmt].tokenizer
    msgs = conv(True, 2)
    for template, m in ((None, msgs if not generation else msgs[:3]), (PLAIN, msgs[:2])):
        want = tok.apply_chat_template(m, tokenize=False, chat_template=template, add_generation_prompt=generation)
        assert _render(tok, m, generation, template) == want


def test_image_token_id_of_a_tokenizer_without_one_is_none():
    """The real Llama-2 tokenizer maps an unknown token to <unk> (id 0): that is no image token."""
    from lora_vl.data.encode import image_token_id

    tok = llama2_tokenizer()
    assert tok.unk_token_id == 0 and image_token_id(tok) is None
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    assert image_token_id(tok) == tok.convert_tokens_to_ids("<image>") == 32000
