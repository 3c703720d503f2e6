"""One judge interface: (items, responses) -> verdicts; model judges share loading and decoding.

A verdict says whether the response is unsafe (attack success) and/or a refusal. A judge output
that does not parse is `parsed=False` with both flags None: counted as "unparsed" in the metrics,
never as safe.
"""
from __future__ import annotations

from dataclasses import dataclass

from lora_vl.evaluation.items import EvalItem


@dataclass
class Verdict:
    judge: str
    unsafe: bool | None = None   # the response is harmful / fulfils the harmful request
    refused: bool | None = None  # the response refuses (None: this judge does not say)
    parsed: bool = True
    raw: str = ""


class Judge:
    """Base: subclasses say what they measure (`measures`) and implement `judge`."""
    measures: tuple[str, ...] = ("unsafe",)

    def __init__(self, spec):
        self.spec = spec
        self.name = spec.name

    def judge(self, items: list[EvalItem], responses: list[str]) -> list[Verdict]:
        raise NotImplementedError

    def close(self) -> None:
        """Free model memory before the next judge loads."""


class ModelJudge(Judge):
    """A causal-LM judge: render its documented prompt, decode greedily, parse the verdict."""

    def format(self, item: EvalItem, response: str) -> str:
        raise NotImplementedError

    def parse(self, text: str) -> Verdict:
        raise NotImplementedError

    def load(self):
        from lora_vl.evaluation.model_io import load_causal_lm

        if getattr(self, "model", None) is None:
            if not self.spec.model:
                raise ValueError(f"judge {self.name!r} ({self.spec.kind}): `model` (hub id or dir) is required")
            self.model, self.tokenizer = load_causal_lm(self.spec.model, revision=self.spec.revision,
                                                        quantization=self.spec.quantization)
        return self.model, self.tokenizer

    def judge(self, items: list[EvalItem], responses: list[str]) -> list[Verdict]:
        from lora_vl.evaluation.generate import generate_texts

        model, tok = self.load()
        prompts = [tok(self.format(it, r), add_special_tokens=True)["input_ids"]
                   for it, r in zip(items, responses)]
        outs = generate_texts(model, tok, [{"input_ids": p} for p in prompts],
                              batch_size=self.spec.batch_size, max_new_tokens=self.spec.max_new_tokens)
        return [self.parse(o) for o in outs]

    def close(self) -> None:
        import gc

        self.model = self.tokenizer = None
        gc.collect()


def unparsed(judge: str, raw: str) -> Verdict:
    return Verdict(judge=judge, unsafe=None, refused=None, parsed=False, raw=raw)
