"""Reader registry: benchmark family name -> reader, and the study category it measures."""
from __future__ import annotations

from lora_vl.evaluation.items import EvalItem, per_category_subset, seeded_subset
from lora_vl.evaluation.readers import helpfulness, mm_safety, over_refusal, text_safety

READERS = {
    "sorry_bench": text_safety.read_sorry_bench,
    "wildjailbreak": text_safety.read_wildjailbreak,
    "advbench": text_safety.read_advbench,
    "harmbench": text_safety.read_harmbench,
    "strongreject": text_safety.read_strongreject,
    "figstep": mm_safety.read_figstep,
    "mm_safetybench": mm_safety.read_mm_safetybench,
    "siuo": mm_safety.read_siuo,
    "vlguard": mm_safety.read_vlguard,
    "xstest": over_refusal.read_xstest,
    "mossbench": over_refusal.read_mossbench,
    "mmbench": helpfulness.read_mmbench,
    "mme": helpfulness.read_mme,
    "seedbench": helpfulness.read_seedbench,
    "pope": helpfulness.read_pope,
    "scienceqa": helpfulness.read_scienceqa,
}
DEFAULT_CATEGORY = {
    **dict.fromkeys(["sorry_bench", "wildjailbreak", "advbench", "harmbench", "strongreject"], "text_safety"),
    **dict.fromkeys(["figstep", "mm_safetybench", "siuo", "vlguard"], "mm_safety"),
    **dict.fromkeys(["xstest", "mossbench"], "over_refusal"),
    **dict.fromkeys(["mmbench", "mme", "seedbench", "pope", "scienceqa"], "helpfulness"),
}
# Subsets that flip a benchmark's category: benign probes measure over-refusal, harmful ones safety.
SUBSET_CATEGORY = {("vlguard", "safe_safes"): "over_refusal", ("xstest", "unsafe"): "text_safety",
                   ("wildjailbreak", "adversarial_benign"): "over_refusal"}


def study_category(spec) -> str:
    """The study category a benchmark spec measures: its own key, else the reader's default."""
    return spec.category or SUBSET_CATEGORY.get((spec.reader, spec.subset), DEFAULT_CATEGORY[spec.reader])


def read_benchmark(spec, seed: int) -> list[EvalItem]:
    """All items of `spec`, then the seeded subset it asks for (per category first, then total)."""
    items = READERS[spec.reader](spec)
    items = per_category_subset(items, spec.per_category, seed)
    return seeded_subset(items, spec.limit, seed)
