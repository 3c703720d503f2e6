"""The kit's chat formats against the upstream code that defines them, run on the real Llama-2
tokenizer: LLaVA's `llava_llama_2` and stage-1 `plain` (llava/train.py preprocess_*), and the
Tulu-2 format (open-instruct's encode_with_messages_format). Token ids AND labels must match."""
import copy
import importlib.util
from types import SimpleNamespace
from typing import Dict, Sequence

import pytest
import torch
import transformers
from transformers import CLIPImageProcessor, LlavaProcessor
from upstream_code import UPSTREAM, load_defs, llama2_tokenizer

from lora_vl.data.encode import IGNORE, encode_chat
from lora_vl.models.templates import PLAIN, TEMPLATES

IMAGE_INDEX = -200  # LLaVA's IMAGE_TOKEN_INDEX: one id per image, expanded inside the model

# LLaVA-Pretrain and LLaVA-Instruct record shapes: the pretrain prompt puts <image> last
PRETRAIN = [{"from": "human", "value": "Render a clear and concise summary of the photo.\n<image>"},
            {"from": "gpt", "value": "a red circle on a white background"}]
INSTRUCT = [{"from": "human", "value": "What is in the picture?\n<image>"}, {"from": "gpt", "value": "A red circle."},
            {"from": "human", "value": "Is it big?"}, {"from": "gpt", "value": "No, it is small."}]
TEXT_ONLY = [{"from": "human", "value": "Name a primary colour."}, {"from": "gpt", "value": "Red."}]


def llava_conversation_module():
    spec = importlib.util.spec_from_file_location("llava_conversation", UPSTREAM / "llava" / "conversation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def llava():
    conv = llava_conversation_module()
    mm = load_defs("llava/mm_utils.py", ["tokenizer_image_token"], {"torch": torch, "IMAGE_TOKEN_INDEX": IMAGE_INDEX})
    ns = {"torch": torch, "transformers": transformers, "Dict": Dict, "Sequence": Sequence, "copy": copy,
          "conversation_lib": conv, "tokenizer_image_token": mm["tokenizer_image_token"], "IGNORE_INDEX": IGNORE,
          "DEFAULT_IMAGE_TOKEN": "<image>", "DEFAULT_IM_START_TOKEN": "<im_start>",
          "DEFAULT_IM_END_TOKEN": "<im_end>", "DataArguments": object}
    fns = load_defs("llava/train.py", ["preprocess_multimodal", "preprocess_llama_2", "preprocess_plain"], ns)
    return SimpleNamespace(conv=conv, **fns, **mm)


@pytest.fixture(scope="module", params=["first", "always"])
def tokenizer(request):
    """The Llama-2 tokenizer as transformers builds it from GGUF ('first') and with SentencePiece's
    legacy '▁' after special tokens ('always'): the kit must match LLaVA under both."""
    tok = llama2_tokenizer(request.param)
    tok.pad_token = tok.unk_token  # LLaVA's Llama setting (its mask check counts non-pad ids)
    tok.model_max_length = 2048  # LLaVA-1.5 training setting
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})  # as lora_vl.models.compose does
    return tok


def processor(tokenizer):
    """A LlavaProcessor over the real tokenizer; pixels are never computed (with_pixels=False)."""
    ip = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return LlavaProcessor(image_processor=ip, tokenizer=tokenizer, patch_size=8,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1)


def messages(source):
    return [{"role": "user" if s["from"] == "human" else "assistant", "content": s["value"]} for s in source]


def collapse_images(enc, image_id):
    """The kit expands an image to its feature count; LLaVA keeps one IMAGE_INDEX per image."""
    ids, labels = [], []
    for t, label in zip(enc.input_ids, enc.labels):
        if t == image_id:
            assert label == IGNORE
            if ids and ids[-1] == IMAGE_INDEX:
                continue
            t = IMAGE_INDEX
        ids.append(t)
        labels.append(label)
    return ids, labels


def ours(tokenizer, source, template):
    n_images = sum(s["value"].count("<image>") for s in source)
    enc = encode_chat(processor(tokenizer), messages(source), [None] * n_images, with_pixels=False,
                      chat_template=template)
    return collapse_images(enc, tokenizer.convert_tokens_to_ids("<image>"))


def llava_prompt(llava, source):
    conv = llava.conv.conv_llava_llama_2.copy()
    conv.messages = []
    for j, s in enumerate(source):
        conv.append_message(conv.roles[j % 2], s["value"])
    return conv.get_prompt()


@pytest.mark.parametrize("source", [INSTRUCT, TEXT_ONLY], ids=["image-2-turns", "text-only"])
def test_llava_llama_2_matches_llava(llava, tokenizer, source):
    llava.conv.default_conversation = llava.conv.conv_llava_llama_2
    has_image = "<image>" in source[0]["value"]
    src = llava.preprocess_multimodal(copy.deepcopy([source]), SimpleNamespace(is_multimodal=True,
                                                                             mm_use_im_start_end=False))
    # the text: LLaVA drops the leading <s> from its prompt and lets the tokenizer add BOS
    text = tokenizer.apply_chat_template(messages(source), tokenize=False, chat_template=TEMPLATES["llava_llama_2"])
    assert text == tokenizer.bos_token + llava_prompt(llava, src[0])
    if has_image:  # LLaVA's system block first, then the image moved to the front of the turn
        assert "<</SYS>>\n\n<image>\nWhat is in the picture? [/INST]" in text
    # the ids and the labels (loss on the answers and their ' </s>' only)
    ref = llava.preprocess_llama_2(src, tokenizer, has_image=has_image)
    ids, labels = ours(tokenizer, source, TEMPLATES["llava_llama_2"])
    assert ids == ref["input_ids"][0].tolist()
    assert labels == ref["labels"][0].tolist()


def test_plain_matches_llava_stage1(llava, tokenizer):
    llava.conv.default_conversation = llava.conv.conv_llava_plain
    ref = llava.preprocess_plain(copy.deepcopy([PRETRAIN]), tokenizer)
    ids, labels = ours(tokenizer, PRETRAIN, PLAIN)
    assert ids == ref["input_ids"][0].tolist() and labels == ref["labels"][0].tolist()
    learned = [t for t in labels if t != IGNORE]
    assert tokenizer.decode(learned) == PRETRAIN[1]["value"] + "\n"  # the caption and its newline, no prompt


def test_real_llama2_boundaries(tokenizer):
    """What real training sees: BOS, '▁[' opening each first [INST], the first answer token carries
    the space after [/INST] as its '▁', and nothing of [/INST] is learned."""
    ids, labels = ours(tokenizer, TEXT_ONLY, TEMPLATES["llava_llama_2"])
    toks = tokenizer.convert_ids_to_tokens(ids)
    assert toks[:2] == ["<s>", "▁["]
    first = next(i for i, label in enumerate(labels) if label != IGNORE)
    assert toks[first - 4:first + 1] == ["▁[", "/", "INST", "]", "▁Red"]
    assert toks[-2:] == ["▁", "</s>"] and labels[-2:] == ids[-2:]


@pytest.fixture(scope="module")
def open_instruct():
    train = load_defs("open-instruct/finetune.py", ["encode_with_messages_format"], {"torch": torch})
    evaluate = load_defs("open-instruct/templates.py", ["create_prompt_with_tulu_chat_format"])
    return SimpleNamespace(**train, **evaluate)


TULU = [{"role": "system", "content": "You are a careful assistant."},
        {"role": "user", "content": "What is 2 + 2? "}, {"role": "assistant", "content": " 4."},
        {"role": "user", "content": "And 3 + 3?"}, {"role": "assistant", "content": "6."}]


def test_tulu2_matches_open_instruct(open_instruct, tokenizer):
    ref = open_instruct.encode_with_messages_format({"messages": TULU}, tokenizer, max_seq_length=4096)
    enc = encode_chat(SimpleNamespace(tokenizer=tokenizer), TULU, [], chat_template=TEMPLATES["tulu2"])
    assert enc.input_ids == ref["input_ids"].tolist()  # BOS first, no '\n' after the last </s>
    assert enc.labels == ref["labels"].tolist()  # a non-final answer learns its '</s>\n'
    # open-instruct's eval prompt (BOS, then '<|assistant|>\n'); it strips no content, its training
    # text does, and the kit follows training: the contents here have no outer whitespace
    ask = [TULU[0], {"role": "user", "content": "What is 2 + 2?"}]
    prompt = tokenizer.apply_chat_template(ask, tokenize=False, add_generation_prompt=True,
                                           chat_template=TEMPLATES["tulu2"])
    assert prompt == open_instruct.create_prompt_with_tulu_chat_format(ask)


def test_llava_tulu2_is_tulu2_after_llava_image_placement(llava, tokenizer):
    """LLaVA has no Tulu conversation: llava_tulu2 = open-instruct's Tulu-2 text of the messages
    after LLaVA's preprocess_multimodal, tokenized as LLaVA's tokenizer_image_token does."""
    concat = load_defs("open-instruct/finetune.py", ["_concat_messages"], {"tokenizer": tokenizer})["_concat_messages"]
    src = llava.preprocess_multimodal(copy.deepcopy([INSTRUCT]), SimpleNamespace(is_multimodal=True,
                                                                                mm_use_im_start_end=False))
    expected = concat(messages(src[0])).strip()
    text = tokenizer.apply_chat_template(messages(INSTRUCT), tokenize=False, chat_template=TEMPLATES["llava_tulu2"])
    assert text == tokenizer.bos_token + expected and "<|user|>\n<image>\nWhat is in the picture?" in text
    ids, _ = ours(tokenizer, INSTRUCT, TEMPLATES["llava_tulu2"])
    assert ids == llava.tokenizer_image_token(expected, tokenizer)
