"""Answers for every item: from the generation cache, else generated now and appended per batch.

The model is loaded only if some item is missing, so a re-judge or re-report never touches it.
"""
from __future__ import annotations

from typing import Callable

from lora_vl.evaluation.cache import GenerationCache, prompt_hash
from lora_vl.evaluation.generate import generate_texts
from lora_vl.evaluation.items import BenchmarkError, EvalItem
from lora_vl.evaluation.model_io import encode_item


def item_hash(item: EvalItem, max_new_tokens: int) -> str:
    image_ref = item.image if isinstance(item.image, str) else item.has_image
    return prompt_hash(f"{item.prompt}\x00{max_new_tokens}", image_ref)


def missing(cache: GenerationCache, fp: str, items: list[EvalItem], max_new: int) -> list[EvalItem]:
    return [it for it in items if cache.get(fp, it.benchmark, it.id, item_hash(it, max_new)) is None]


def encode_all(em, items: list[EvalItem]) -> tuple[list[EvalItem], list[dict], list[dict]]:
    """(encodable items, their prompts, errors) — a broken image skips its item: the error names
    it, and its `reason` is shared by every item failing the same way (the run reports skips
    grouped by reason, once per benchmark, not one warning per item)."""
    ok, prompts, errors = [], [], []
    for it in items:
        try:
            prompts.append(encode_item(em, it))
            ok.append(it)
        except (BenchmarkError, ValueError) as e:
            errors.append({"id": it.id, "error": str(e), "reason": getattr(e, "reason", type(e).__name__)})
    return ok, prompts, errors


# Items encoded (images decoded, pixel values built) ahead of generation: a full MMBench-dev
# (4.3k items) at once would hold ~6 GB of CLIP-336 pixel values; a slice of this many holds ~0.3.
ENCODE_AHEAD = 256


def generate_missing(em, cache: GenerationCache, items: list[EvalItem], *, batch_size: int,
                     max_new_tokens: int, on_batch: Callable[[list[str]], None] | None = None,
                     backend: str = "hf") -> list[dict]:
    """Generate `items` (all missing from the cache), appending each finished batch durably.
    Images are decoded slice by slice (`ENCODE_AHEAD` items), as generation reaches them."""
    errors = []
    for start in range(0, len(items), ENCODE_AHEAD):
        todo, prompts, slice_errors = encode_all(em, items[start:start + ENCODE_AHEAD])
        errors += slice_errors

        def store(idx: list[int], texts: list[str], todo=todo) -> None:
            cache.append([{"model": em.fingerprint, "benchmark": todo[i].benchmark, "id": todo[i].id,
                           "prompt_sha": item_hash(todo[i], max_new_tokens), "response": t}
                          for i, t in zip(idx, texts)])
            if on_batch is not None:
                on_batch([todo[i].id for i in idx])

        if backend == "vllm":
            from lora_vl.evaluation.vllm_backend import generate_texts as vllm_generate
            vllm_generate(em, todo, prompts, max_new_tokens=max_new_tokens, on_batch=store)
        else:
            generate_texts(em.model, em.tokenizer, prompts, batch_size=batch_size,
                           max_new_tokens=max_new_tokens, on_batch=store)
    return errors


def cached_answers(cache: GenerationCache, fp: str, items: list[EvalItem], max_new: int) -> dict[str, str]:
    out = {}
    for it in items:
        r = cache.get(fp, it.benchmark, it.id, item_hash(it, max_new))
        if r is not None:
            out[it.id] = r
    return out
