"""One judge interface: (items, responses) -> verdicts; model judges share loading and decoding.

A verdict says whether the response is unsafe (attack success) and/or a refusal, as far as the
judge says (None: it does not say, e.g. WildGuard's 'N/A'). A judge output that does not parse
is `parsed=False`: its missing flags are counted as "unparsed" in the metrics, never as safe.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from lora_vl.errors import InputError
from lora_vl.evaluation.generate import generate_texts
from lora_vl.evaluation.items import EvalItem
from lora_vl.models.load import load_causal_lm


@dataclass
class Verdict:
    judge: str
    unsafe: bool | None = None   # the response is harmful / fulfils the harmful request
    refused: bool | None = None  # the response refuses (None: this judge does not say)
    parsed: bool = True
    raw: str = ""
    categories: list[str] = field(default_factory=list)  # violated categories (Llama Guard S1..S14)


class Judge:
    """Base: subclasses implement `judge`; register with `@judge(...)` (judges/registry.py)."""

    def __init__(self, spec):
        self.spec = spec
        self.name = spec.name

    def judge(self, items: list[EvalItem], responses: list[str]) -> list[Verdict]:
        raise NotImplementedError

    def close(self) -> None:
        """Free model memory before the next judge loads."""


class ModelJudge(Judge):
    """A causal-LM judge: render its upstream prompt, decode greedily, parse the verdict.

    `add_special_tokens`: whether the tokenizer adds BOS (False when the prompt text holds it);
    `max_new_tokens`: the judge's upstream output budget, unless the suite sets one."""
    add_special_tokens = True
    max_new_tokens = 16

    def format(self, item: EvalItem, response: str) -> str:
        raise NotImplementedError

    def parse(self, text: str) -> Verdict:
        raise NotImplementedError

    @property
    def budget(self) -> int:
        return self.spec.max_new_tokens or self.max_new_tokens

    def load(self):
        if getattr(self, "model", None) is None:
            if not self.spec.model:
                raise InputError(f"judge {self.name!r} ({self.spec.kind}): `model` (hub id or dir) is required")
            self.model, self.tokenizer = load_causal_lm(self.spec.model, revision=self.spec.revision,
                                                        quantization=self.spec.quantization, padding_side="left")
            self.model.eval()
        return self.model, self.tokenizer

    def judge(self, items: list[EvalItem], responses: list[str]) -> list[Verdict]:
        model, tok = self.load()
        prompts = [tok(self.format(it, r), add_special_tokens=self.add_special_tokens)["input_ids"]
                   for it, r in zip(items, responses)]
        outs = generate_texts(model, tok, [{"input_ids": p} for p in prompts],
                              batch_size=self.spec.batch_size, max_new_tokens=self.budget)
        return [self.parse(o) for o in outs]

    def close(self) -> None:
        import gc

        self.model = self.tokenizer = None
        gc.collect()


def unparsed(judge: str, raw: str) -> Verdict:
    return Verdict(judge=judge, unsafe=None, refused=None, parsed=False, raw=raw)
