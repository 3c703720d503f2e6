"""The study's metric vocabulary, declared once: key, label, report column, which way is better, and
how each is measured. The evaluation summary (`results.summarize`), the claims and the study
report all read this table, so a new metric is one entry here.

Summary metrics pool a per-benchmark rate (`measure`) over the benchmarks of one category, or
over other summary metrics (`parts`); analysis metrics are read per layer from analysis.json.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Metric:
    key: str
    label: str                            # how a claim names it
    column: str                           # its report column / plot title
    better: Literal["lower", "higher"]
    measure: str | None = None            # the pooled per-benchmark rate: asr, refusal_rate, accuracy
    category: str | None = None           # pooled over this benchmark category's primary numbers ...
    parts: tuple[str, ...] = ()           # ... or over these summary metrics
    summary: bool = True                  # False: an analysis metric (per layer, analysis.json)


METRICS: dict[str, Metric] = {m.key: m for m in (
    Metric("text_safety", "text ASR", "text ASR", "lower", "asr", "text_safety"),
    Metric("mm_safety", "multimodal ASR", "MM ASR", "lower", "asr", "mm_safety"),
    Metric("safety", "ASR (text + multimodal)", "ASR (pooled)", "lower", "asr", parts=("text_safety", "mm_safety")),
    Metric("text_refusal", "refusal rate on harmful text asks", "harmful text refused", "higher",
           "refusal_rate", "text_safety"),
    Metric("mm_refusal", "refusal rate on harmful image asks", "harmful image refused", "higher",
           "refusal_rate", "mm_safety"),
    Metric("harmful_refusal", "refusal rate on harmful asks (text + multimodal)", "harmful refused (pooled)",
           "higher", "refusal_rate", parts=("text_refusal", "mm_refusal")),
    Metric("over_refusal", "over-refusal rate", "over-refusal", "lower", "refusal_rate", "over_refusal"),
    Metric("helpfulness", "helpfulness accuracy", "helpfulness", "higher", "accuracy", "helpfulness"),
    Metric("probe_acc", "held-out probe accuracy", "probe accuracy", "higher", summary=False),
    Metric("ref_d", "harmful vs benign separation d′ along the LLM's direction", "refusal-direction d′", "higher",
           summary=False),
)}



def summary_keys() -> list[str]:
    """The summary metrics in table order (read at call time: the table is the one place to edit)."""
    return [k for k, m in METRICS.items() if m.summary]


# a benchmark category's primary number: the metric named after the category
PRIMARY_METRIC = {m.category: m.measure for m in METRICS.values() if m.category == m.key}
