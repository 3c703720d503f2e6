"""The data check's batched encoding (`encode_lengths`, one tokenizer call per chunk of records)
gives exactly what encoding each record alone gives: ids, labels, lengths and the same errors,
under every chat format the kit ships and the real tokenizer vocabularies."""
from pathlib import Path

import pytest
from PIL import Image
from transformers import AutoTokenizer, CLIPImageProcessor, LlavaProcessor

from lora_vl.data.config import DataConfig, DataSource
from lora_vl.data.dataset import TrainSet
from lora_vl.data.encode import BadRecord, encode_chat, encode_lengths, image_token_id, tokenize_many
from lora_vl.data.sample import Sample
from lora_vl.models.templates import PLAIN, TEMPLATES

HERE = Path(__file__).parent / "fixtures" / "tokenizers"
SHARED = Path(__file__).parents[2] / "shared" / "fixtures" / "tokenizers"  # Llama-3, Qwen2: not in the repo
VOCABS = {"llama-spm": HERE, "phi-3": HERE, "llama-bpe": SHARED, "qwen2": SHARED}


# Llama-3 and Qwen2 take ~20 s each to convert from GGUF: slow (the full suite runs them)
@pytest.fixture(scope="module", params=[pytest.param(v, marks=pytest.mark.slow) if VOCABS[v] == SHARED else v
                                        for v in sorted(VOCABS)])
def tokenizer(request):
    folder = VOCABS[request.param]
    if not (folder / f"ggml-vocab-{request.param}.gguf").exists():
        pytest.skip(f"no {request.param} vocabulary in {folder}")
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=f"ggml-vocab-{request.param}.gguf")
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    return tok


def processor(tok, template: str) -> LlavaProcessor:
    tok.chat_template = template
    ip = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=8,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1)


def u(text):
    return {"role": "user", "content": text}


def a(text):
    return {"role": "assistant", "content": text}


# (messages, images): plain and tricky texts (leading spaces, newlines, unicode, digits, BOS-like
# text), images before/after/inside the text, multi-turn, system turns, and bad records
CONVERSATIONS = [
    ([u("<image>\nDescribe the image concisely."), a("a man riding a horse on a beach")], 1),
    ([u("Provide a brief description.\n<image>"), a("  two dogs  play\nwith a ball. ")], 1),
    ([u("What is <image> this?"), a("Ça coûte 3,50 € — 東京 🚀")], 1),
    ([u("hello"), a("hi there"), u("and 12345?"), a("<s>not a bos</s> ok")], 0),
    ([{"role": "system", "content": "Be brief."}, u("<image>\nWhat color?"), a("Red."), u("Sure?"), a("Yes.")], 1),
    ([u("<s> starts like BOS"), a("fine")], 0),
    ([u("<image>\n" + "long " * 200), a("x " * 200)], 1),           # over max_length: Overlong
    ([u("no image here"), a("but one was given")], 1),              # placeholder mismatch
    ([u("<image>\nq"), a("   ")], 1),                               # empty answer
    ([a("starts with the assistant"), u("q")], 0),
    ([u("a"), a("b"), a("two assistant turns in a row")], 0),       # some templates raise
    ([u("<image>\nFirst."), a("one"), u("Second?"), a("two"), u("Third?"), a("three")], 1),
]


def outcome(x):
    if isinstance(x, BadRecord):
        return type(x).__name__, str(x)
    return x.input_ids, x.labels, x.n_images


@pytest.mark.parametrize("template", sorted(TEMPLATES) + ["plain"])
@pytest.mark.parametrize("truncate", [False, True])
def test_batched_equals_one_by_one(tokenizer, template, truncate):
    proc = processor(tokenizer, PLAIN if template == "plain" else TEMPLATES[template])
    chat_template = PLAIN if template == "plain" else None
    convs = [(m, n, f"record {k}") for k, (m, n) in enumerate(CONVERSATIONS)]
    alone = []
    for m, n, where in convs:
        try:
            alone.append(encode_chat(proc, m, [None] * n, max_length=300, truncate=truncate, where=where,
                                     with_pixels=False, chat_template=chat_template))
        except BadRecord as e:
            alone.append(e)
    together = encode_lengths(proc, convs, max_length=300, truncate=truncate, chat_template=chat_template)
    assert [outcome(x) for x in together] == [outcome(x) for x in alone]
    assert sum(not isinstance(x, BadRecord) for x in alone) >= 3  # the comparison covers encoded records


def one_piece_at_a_time(tok, text, image_id):
    """LLaVA's tokenizer_image_token, spelled out: each piece tokenized in a call of its own."""
    ids, offsets, pos = [], [], 0
    if text.startswith(tok.bos_token):
        ids, offsets, pos = [tok.bos_token_id], [0], len(tok.bos_token)
    for k, piece in enumerate(text[pos:].split("<image>")):
        if k:
            ids.append(image_id)
            offsets.append(pos - len("<image>"))
        enc = tok(piece, add_special_tokens=False, return_offsets_mapping=True)
        ids += enc["input_ids"]
        offsets += [pos + s for s, _ in enc["offset_mapping"]]
        pos += len(piece) + len("<image>")
    return ids, offsets


def test_tokenize_many_equals_a_call_per_piece(tokenizer):
    image_id = image_token_id(tokenizer)
    texts = [tokenizer.bos_token + "[INST] <image>\nhi [/INST] a b </s>", "no bos <image> x<image>y",
             "", "<image>", "  spaced\n\nlines  ", tokenizer.bos_token + "Ça 東京 🚀 12345"]
    assert tokenize_many(tokenizer, texts, image_id) == [one_piece_at_a_time(tokenizer, t, image_id)
                                                         for t in texts]
    assert tokenize_many(tokenizer, [], image_id) == []


def test_trainset_check_equals_the_per_record_judge(tokenizer, tmp_path):
    """TrainSet's chunked verdicts = `_judge` record by record (missing image files included)."""
    Image.new("RGB", (32, 32), "red").save(tmp_path / "a.png")
    proc = processor(tokenizer, TEMPLATES["llava_llama_2"])
    samples = [Sample(id=str(k), messages=m, images=[tmp_path / ("a.png" if k % 5 else "gone.png")] * n,
                      source="s") for k, (m, n) in enumerate(CONVERSATIONS)]
    for chat_format in ("model", "plain"):
        cfg = DataConfig(sources=[DataSource(format="llava_json", path="unused")], max_length=300,
                         chat_format=chat_format, bad_records="skip")
        data = TrainSet(cfg, proc, records=samples, workers=1)
        assert data._judge_many(samples) == [data._judge(s) for s in samples]


@pytest.mark.parametrize("spans", [[], [(3, 9)], [(0, 4), (4, 7)], [(2, 8), (5, 12)], [(9, 14), (1, 3)],
                                   [(5, 5), (6, 6)], [(1, 20), (4, 6)]])
def test_labels_are_the_tokens_starting_in_a_span(spans):
    """`_label` bisects the spans' union; the rule it must keep: a token is learned iff it starts
    inside some span (spans may touch, overlap, nest, come unsorted or be empty)."""
    from lora_vl.data.encode import IGNORE, _label

    starts = list(range(0, 22, 1))
    token_ids = [100 + t for t in starts]
    token_ids[10] = 7  # an image token: expanded, never learned
    ids, labels = _label(token_ids, starts, spans, 7, 3)
    want = []
    for tok, start in zip(token_ids, starts):
        want += [IGNORE] * 3 if tok == 7 else [tok if any(s <= start < e for s, e in spans) else IGNORE]
    assert labels == want and len(ids) == len(want)
