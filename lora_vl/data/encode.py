"""Conversation → token ids + labels (loss on assistant tokens only) + pixel values.

The one place prompts are built, for training and for generation alike. The chat template
renders the whole conversation once; assistant spans are found as character ranges by
rendering growing prefixes (templates are prefix-stable), and tokens are labelled by their
character offsets. Text is tokenized as LLaVA's `tokenizer_image_token` does (see `tokenize`).
Image placeholders are expanded to the encoder's token count here (not in `LlavaProcessor`) so
that labels stay aligned with the expanded ids. A stage may render with another chat format
than the model's own (`chat_template`, e.g. LLaVA's stage-1 `plain`).
"""
from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

import jinja2
import torch
from transformers.utils.chat_template_utils import _compile_jinja_template

from lora_vl.errors import InputError

IMAGE_PLACEHOLDER = "<image>"
IGNORE = -100


class BadRecord(InputError):
    """A data record that cannot be used; the message names the record and what is wrong."""


class Overlong(BadRecord):
    """A record longer than max_length that cannot be truncated without harm."""


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    pixel_values: torch.Tensor | None
    n_images: int


def _render(tokenizer, messages, add_generation_prompt: bool, chat_template: str | None = None,
            where: str = "record") -> str:
    """`tokenizer.apply_chat_template(messages, tokenize=False, ...)` without its per-call
    normalisation (message objects to dicts, reasoning aliases), which costs twice the render
    itself on short records; our messages are plain role/content dicts already. The template is
    compiled once by transformers' own cache. tests/test_encode.py checks the two agree."""
    template = _compile_jinja_template(tokenizer.get_chat_template(chat_template))
    try:
        return template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                               **tokenizer.special_tokens_map)
    except jinja2.TemplateError as e:  # e.g. a format's raise_exception on a record it cannot take
        raise BadRecord(f"{where}: the chat format rejects this conversation: {e}") from e


def assistant_spans(tokenizer, messages, text: str, where: str,
                    chat_template: str | None = None) -> list[tuple[int, int]]:
    """Character ranges in `text` of each assistant turn: content, end-of-turn markers and the
    whitespace that separates it from the next turn (open-instruct's Tulu-2 labels learn the
    newline after a non-final </s>)."""
    spans = []
    for i, msg in enumerate(messages):
        if msg["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:i], True, chat_template, where)
        last = i == len(messages) - 1  # then the prefix is the whole conversation: `text`, rendered already
        upto = text if last else _render(tokenizer, messages[: i + 1], False, chat_template, where)
        if not (upto.startswith(before) and text.startswith(upto)):
            raise BadRecord(f"{where}: the chat template is not prefix-stable at turn {i}; "
                            "cannot locate the assistant tokens")
        end = len(upto)
        while end < len(text) and text[end].isspace():
            end += 1
        spans.append((len(before), end))
    return spans


def tokenize(tokenizer, text: str, image_id: int | None) -> tuple[list[int], list[int]]:
    """(token ids, character offset where each starts), tokenized as LLaVA's
    `tokenizer_image_token`: the text around each image placeholder is tokenized on its own (a
    SentencePiece tokenizer gives each piece its word-initial '▁'), and a leading BOS is the
    tokenizer's BOS id with the text after it tokenized as a fresh string, as `tokenizer(text)`
    does. Without an image token (a text-only LM) the placeholder is ordinary text."""
    return tokenize_many(tokenizer, [text], image_id)[0]


def tokenize_many(tokenizer, texts: list[str], image_id: int | None) -> list[tuple[list[int], list[int]]]:
    """`tokenize` of each text, with the pieces of all texts in one tokenizer call: a fast
    tokenizer encodes a batch in Rust threads and pays the call's Python cost once (the
    data check: ~4x less tokenizer time per stage-1 record than a call per record)."""
    bos = tokenizer.bos_token
    bos_id = tokenizer.bos_token_id if bos else None
    plans, pieces = [], []  # per text: (leading BOS?, start offset of each piece)
    for text in texts:
        parts = text.split(IMAGE_PLACEHOLDER) if image_id is not None else [text]
        head = bos_id is not None and parts[0].startswith(bos)
        if head:
            parts[0] = parts[0][len(bos):]
        starts, pos = [], len(bos) if head else 0
        for piece in parts:
            starts.append(pos)
            pos += len(piece) + len(IMAGE_PLACEHOLDER)
        plans.append((head, starts))
        pieces += parts
    if not pieces:
        return []
    enc = tokenizer(pieces, add_special_tokens=False, return_offsets_mapping=True)
    all_ids, all_offsets, at, out = enc["input_ids"], enc["offset_mapping"], 0, []
    for head, starts in plans:
        ids, offsets = ([bos_id], [0]) if head else ([], [])
        for k, start in enumerate(starts):
            if k:
                ids.append(image_id)
                offsets.append(start - len(IMAGE_PLACEHOLDER))
            ids += all_ids[at + k]
            offsets += [start + s for s, _ in all_offsets[at + k]]
        at += len(starts)
        out.append((ids, offsets))
    return out


def image_token_id(tokenizer) -> int | None:
    """The `<image>` token's id, or None for a tokenizer without one (a text-only LM: then nothing
    is an image). A single-token lookup: `get_vocab()` builds the whole vocabulary dict (a 128k
    vocabulary costs ~50 ms), and an unknown token maps to the unknown-token id, not None."""
    tid = tokenizer.convert_tokens_to_ids(IMAGE_PLACEHOLDER)
    if tid is None or (tid == tokenizer.unk_token_id and tokenizer.unk_token != IMAGE_PLACEHOLDER):
        return None
    return tid


def image_token_count(processor, pixel_values: torch.Tensor) -> int:
    """Same arithmetic as LlavaProcessor: patches (+CLS) minus CLS under 'default'."""
    h, w = pixel_values.shape[-2:]
    n = (h // processor.patch_size) * (w // processor.patch_size) + processor.num_additional_image_tokens
    return n - 1 if processor.vision_feature_select_strategy == "default" else n


def check_record(messages, n_images: int, where: str, need_assistant: bool) -> None:
    if not messages:
        raise BadRecord(f"{where}: empty conversation")
    for i, m in enumerate(messages):
        if m.get("role") not in ("system", "user", "assistant"):
            raise BadRecord(f"{where}: turn {i} has role {m.get('role')!r}, expected system/user/assistant")
        if not isinstance(m.get("content"), str):
            raise BadRecord(f"{where}: turn {i} content must be text")
        if m["role"] == "assistant" and not m["content"].strip():
            raise BadRecord(f"{where}: turn {i} is an empty assistant response")
    first = next((m["role"] for m in messages if m["role"] != "system"), None)
    if first == "assistant":  # chat templates reject it or mislabel it, far from the record
        raise BadRecord(f"{where}: the conversation starts with an assistant turn; expected a user turn "
                        "first (after an optional system turn)")
    placeholders = sum(m["content"].count(IMAGE_PLACEHOLDER) for m in messages)
    if placeholders != n_images:
        raise BadRecord(f"{where}: {placeholders} '{IMAGE_PLACEHOLDER}' placeholder(s) but {n_images} image(s)")
    if need_assistant and not any(m["role"] == "assistant" for m in messages):
        raise BadRecord(f"{where}: no assistant turn to learn from")


def llava_image_first(messages):
    """LLaVA's `preprocess_multimodal`: a turn holding one <image> becomes '<image>\\n' + the rest,
    stripped. Done on the messages, so the image sits where LLaVA puts it under any chat
    template, a model's own (ChatML, Phi-3, ...) included."""
    return [{**m, "content": (IMAGE_PLACEHOLDER + "\n" + m["content"].replace(IMAGE_PLACEHOLDER, "").strip()).strip()}
            if m["content"].count(IMAGE_PLACEHOLDER) == 1 else m for m in messages]


def encode_chat(processor, messages, images=(), *, add_generation_prompt: bool = False,
                max_length: int | None = None, truncate: bool = False, where: str = "record",
                with_pixels: bool = True, chat_template: str | None = None) -> Encoded:
    """Encode one conversation. `add_generation_prompt` builds a prompt for generation;
    `chat_template` renders with that format instead of the tokenizer's own.

    Over `max_length` the record raises `Overlong` unless `truncate` is set and the cut lands
    after the last image token and keeps at least one labelled token.
    """
    tokenizer = processor.tokenizer
    images = list(images)
    text, spans = _render_with_spans(tokenizer, messages, len(images), add_generation_prompt, where, chat_template)
    image_id = image_token_id(tokenizer)
    token_ids, token_starts = tokenize(tokenizer, text, image_id)
    pixel_values = None
    if images and with_pixels:
        pixel_values = processor.image_processor(images, return_tensors="pt")["pixel_values"]
    n_img_tokens = image_token_count(processor, _pixel_shape(processor, pixel_values)) if images else 0
    ids, labels = _label(token_ids, token_starts, spans, image_id, n_img_tokens)
    if max_length is not None and len(ids) > max_length:
        ids, labels = _truncate(ids, labels, image_id, max_length, truncate, where)
    return Encoded(ids, labels, pixel_values, len(images))


def encode_lengths(processor, conversations, *, max_length: int | None = None, truncate: bool = False,
                   chat_template: str | None = None) -> list[Encoded | BadRecord]:
    """`encode_chat(messages, [None] * n_images, with_pixels=False, ...)` of each (messages,
    n_images, where), the texts tokenized together (`tokenize_many`): the data check's path.
    Each result is the Encoded or the BadRecord (an `Overlong` included) that encode_chat raises."""
    tokenizer = processor.tokenizer
    image_id = image_token_id(tokenizer)
    # as encode_chat: a text-only processor (no image_processor) is fine while no record has an image
    with_images = any(n_images for _, n_images, _ in conversations)
    n_img_tokens = image_token_count(processor, _pixel_shape(processor, None)) if with_images else 0
    out, todo = [], []  # todo: (index in out, text, spans)
    for messages, n_images, where in conversations:
        try:
            text, spans = _render_with_spans(tokenizer, messages, n_images, False, where, chat_template)
        except BadRecord as e:
            out.append(e)
            continue
        todo.append((len(out), text, spans))
        out.append(None)
    for (k, _, spans), (token_ids, token_starts) in zip(
            todo, tokenize_many(tokenizer, [text for _, text, _ in todo], image_id)):
        _, n_images, where = conversations[k]
        ids, labels = _label(token_ids, token_starts, spans, image_id, n_img_tokens if n_images else 0)
        try:
            if max_length is not None and len(ids) > max_length:
                ids, labels = _truncate(ids, labels, image_id, max_length, truncate, where)
            out[k] = Encoded(ids, labels, None, n_images)
        except BadRecord as e:
            out[k] = e
    return out


def _render_with_spans(tokenizer, messages, n_images: int, add_generation_prompt: bool, where: str,
                       chat_template: str | None) -> tuple[str, list[tuple[int, int]]]:
    """The record checked, its image placed as LLaVA does, rendered; with its assistant spans."""
    check_record(messages, n_images, where, need_assistant=not add_generation_prompt)
    messages = llava_image_first(messages)
    text = _render(tokenizer, messages, add_generation_prompt, chat_template, where)
    spans = [] if add_generation_prompt else assistant_spans(tokenizer, messages, text, where, chat_template)
    return text, spans


def _label(token_ids, token_starts, spans, image_id, n_img_tokens) -> tuple[list[int], list[int]]:
    """Ids with each image token expanded to the encoder's count; labels: the token where it
    starts inside an assistant span, else IGNORE."""
    merged: list[list[int]] = []  # the spans' union as disjoint sorted ranges, to bisect per token
    for s, e in sorted(spans):
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        elif s < e:
            merged.append([s, e])
    span_starts = [s for s, _ in merged]
    ids, labels = [], []
    for tok, start in zip(token_ids, token_starts):
        if tok == image_id:
            ids += [image_id] * n_img_tokens
            labels += [IGNORE] * n_img_tokens
            continue
        k = bisect_right(span_starts, start) - 1
        learn = k >= 0 and start < merged[k][1]
        ids.append(tok)
        labels.append(tok if learn else IGNORE)
    return ids, labels


def _pixel_shape(processor, pixel_values):
    if pixel_values is not None:
        return pixel_values
    # no pixels needed (length pass or text-only): the processor's fixed output size
    ip = processor.image_processor
    size = getattr(ip, "crop_size", None) or ip.size
    h = size.get("height") or size.get("shortest_edge")
    w = size.get("width") or size.get("shortest_edge")
    return torch.empty(0, 3, h, w)


def _truncate(ids, labels, image_id, max_length, truncate, where):
    if not truncate:
        raise Overlong(f"{where}: {len(ids)} tokens > max_length {max_length}")
    last_image = max((i for i, t in enumerate(ids) if t == image_id), default=-1)
    if last_image >= max_length:
        raise Overlong(f"{where}: cutting at {max_length} tokens would split image tokens")
    ids, labels = ids[:max_length], labels[:max_length]
    if all(label == IGNORE for label in labels):
        raise Overlong(f"{where}: no assistant token left after truncation to {max_length}")
    return ids, labels
