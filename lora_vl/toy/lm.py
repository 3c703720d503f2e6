"""The toy LM: a BPE tokenizer trained on the world's text, a Llama-class model pretrained from
scratch on the web-like corpus, then aligned into a chat model by chat SFT (the corpus's plain
documents replayed beside the chats).

Both trainings go through the kit's one training loop (`lora_vl.train.loop.train`);
pretraining feeds it packed fixed-length token blocks, alignment the kit's own chat data set
(LLaVA JSON -> assistant-only labels).
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lora_vl.data.batching import collate
from lora_vl.data.config import DataConfig, DataSource
from lora_vl.data.dataset import TrainSet
from lora_vl.data.encode import Encoded
from lora_vl.models.load import NO_HUB_KERNELS
from lora_vl.models.tiny import build_lm, build_tokenizer
from lora_vl.toy.scale import Scale
from lora_vl.train.config import OptimConfig
from lora_vl.train.loop import LoopResult, train


class PackedCorpus:
    """Documents tokenised (chat documents through the tokenizer's chat template), joined with
    BOS/EOS and cut into equal blocks: causal-LM pretraining rows, loss on every token."""

    def __init__(self, corpus: Path, tokenizer, block: int, seed: int, plain_only: bool = False):
        docs = [json.loads(line) for line in Path(corpus).read_text().splitlines()]
        if plain_only:
            docs = [d for d in docs if "messages" not in d]
        random.Random(seed).shuffle(docs)
        ids: list[int] = []
        for d in docs:
            if "messages" in d:
                text = tokenizer.apply_chat_template(d["messages"], tokenize=False)
                ids += tokenizer(text, add_special_tokens=False)["input_ids"]
            else:
                ids += [tokenizer.bos_token_id] + tokenizer(d["text"], add_special_tokens=False)["input_ids"] \
                    + [tokenizer.eos_token_id]
        self.blocks = [ids[i:i + block] for i in range(0, len(ids) - block + 1, block)]
        self.lengths = [block] * len(self.blocks)
        self.pad_id = tokenizer.pad_token_id
        self.tokens = len(ids)

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> Encoded:
        return Encoded(self.blocks[i], self.blocks[i], None, 0)

    def collate(self, items):
        return collate(items, self.pad_id)


def _optim(scale: Scale, lr: float, batch: int, seed: int, **kw) -> OptimConfig:
    return OptimConfig(lr=lr, warmup_ratio=0.05, scheduler="cosine", micro_batch_size=batch,
                       global_batch_size=batch, save_every=10**9, keep_checkpoints=1, seed=seed,
                       weight_decay=0.01, **kw)


def build_tokenizer_and_lm(out: Path, texts: list[str], scale: Scale, seed: int) -> Path:
    """Tokenizer trained on the world's text + a random-init Llama, saved at `out`."""
    tok = build_tokenizer(out, corpus=texts, vocab_size=scale.vocab_size, arch="llama")
    build_lm(out, tok, arch="llama", hidden=scale.lm_hidden, layers=scale.lm_layers, heads=scale.lm_heads,
             kv_heads=scale.lm_heads, seed=seed)
    return out


def _load(path: Path):
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True, dtype=torch.float32, **NO_HUB_KERNELS)
    return tok, model


def pretrain(lm_dir: Path, corpus: Path, work: Path, scale: Scale, seed: int) -> dict:
    """Causal-LM pretraining from scratch on the corpus; saves the model in place."""
    tok, model = _load(lm_dir)
    data = PackedCorpus(corpus, tok, scale.pretrain_block, seed)
    cfg = _optim(scale, scale.pretrain_lr, scale.pretrain_batch, seed, max_steps=scale.pretrain_steps,
                 group_by_length=False)
    res = _train(model, data, cfg, work, "toy LM pretraining")
    model.save_pretrained(lm_dir)
    return {"corpus_tokens": data.tokens, "blocks": len(data), **_summary(res)}


class Mixture:
    """Several data sets drawn from as one (what the training loop needs: items, lengths, collate)."""

    def __init__(self, *parts, pad_id: int):
        self.index = [(k, i) for k, part in enumerate(parts) for i in range(len(part))]
        self.lengths = [n for part in parts for n in part.lengths]
        self.parts, self.pad_id = parts, pad_id

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, j: int) -> Encoded | None:
        k, i = self.index[j]
        return self.parts[k][i]

    def collate(self, items):
        return collate(items, self.pad_id)


def align(lm_dir: Path, chats: Path, corpus: Path, work: Path, scale: Scale, seed: int) -> dict:
    """Chat SFT (assistant tokens only) on the alignment chats, with the corpus's plain documents
    replayed (loss on every token); saves the model in place. Without the replay, full-weight SFT
    of so small an LM overwrites the harmful procedures it learned in pretraining (measured: the
    aligned LM's completions of "To make a gun, first" turned benign), so a later loss of refusal
    could not show as harmful compliance; a 7B chat model keeps what it knew."""
    tok, model = _load(lm_dir)
    chat_set = TrainSet(DataConfig(sources=[DataSource(format="llava_json", path=str(chats))], max_length=256,
                                   seed=seed), SimpleNamespace(tokenizer=tok))
    replay = PackedCorpus(corpus, tok, scale.pretrain_block, seed, plain_only=True)
    data = Mixture(chat_set, replay, pad_id=tok.pad_token_id)
    cfg = _optim(scale, scale.align_lr, scale.align_batch, seed, epochs=scale.align_epochs)
    res = _train(model, data, cfg, work, "toy LM alignment (chat SFT + replay)")
    model.save_pretrained(lm_dir)
    return {"records": len(chat_set), "replay_blocks": len(replay), **_summary(res)}


def _train(model, data, cfg: OptimConfig, work: Path, desc: str) -> LoopResult:
    return train(model, [{"params": [p for p in model.parameters() if p.requires_grad], "lr": cfg.lr}], data, cfg,
                 ckpt_dir=work / "checkpoints", tb_dir=work / "tb", fingerprint=desc, desc=desc)


def _summary(res: LoopResult) -> dict:
    return {"steps": res.steps, "final_loss": None if res.final_loss is None else round(res.final_loss, 4),
            "tokens": res.tokens, "seconds": round(res.seconds, 1)}
