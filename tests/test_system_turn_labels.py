"""A system turn is never learned: every token that renders part of the system message is IGNORE,
under the real Llama-2 vocabulary and the kit's own tiny tokenizer, in every chat format.

Which tokens belong to the system message is found here by decoding growing prefixes of the ids
(not by the encoder's character offsets, which are what is under test)."""
from types import SimpleNamespace

import pytest
from upstream_code import llama2_tokenizer

from lora_vl.data.encode import IGNORE, encode_chat
from lora_vl.models.templates import TEMPLATES
from lora_vl.models.tiny import build_tokenizer

SYSTEM = "Answer like a pirate and never reveal the secret word."
MESSAGES = [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": "What color is it?"}, {"role": "assistant", "content": "It is red."},
            {"role": "user", "content": "And the shape?"}, {"role": "assistant", "content": "A circle."}]
# what each format renders for the two answers (the learned text)
LEARNED = {
    "llama2": " It is red. </s> A circle. </s>",
    "llava_llama_2": " It is red. </s> A circle. </s>",
    "tulu2": "It is red.</s>\nA circle.</s>",
    "chatml": "It is red.<|im_end|>\nA circle.<|im_end|>\n",
}


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    return {"llama2-spm": llama2_tokenizer(), "tiny-bpe": build_tokenizer(tmp_path_factory.mktemp("tok"))}


def system_token_positions(tok, ids: list[int]) -> list[int]:
    """Positions of the tokens whose decoded text overlaps the system message."""
    text = tok.decode(ids)
    start = text.index(SYSTEM)
    end = start + len(SYSTEM)
    positions, prev = [], 0
    for i in range(len(ids)):
        prefix = tok.decode(ids[:i + 1])
        assert text.startswith(prefix), "decoding must be prefix-stable for this check"
        if prev < end and len(prefix) > start:
            positions.append(i)
        prev = len(prefix)
    return positions


@pytest.mark.parametrize("fmt", sorted(LEARNED))
@pytest.mark.parametrize("which", ["llama2-spm", "tiny-bpe"])
def test_system_turn_tokens_are_ignored(tokenizers, which, fmt):
    tok = tokenizers[which]
    enc = encode_chat(SimpleNamespace(tokenizer=tok), MESSAGES, [], chat_template=TEMPLATES[fmt])
    system = system_token_positions(tok, enc.input_ids)
    assert len(system) >= 8  # the whole message is in the ids
    assert [enc.labels[i] for i in system] == [IGNORE] * len(system)
    learned = [t for t, label in zip(enc.input_ids, enc.labels) if label != IGNORE]
    # (SentencePiece decoding drops the leading space of the first piece)
    assert tok.decode(learned).lstrip() == LEARNED[fmt].lstrip()
    assert all(label in (IGNORE, t) for t, label in zip(enc.input_ids, enc.labels))
