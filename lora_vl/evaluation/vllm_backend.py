"""Optional vLLM generation backend (`generation.backend: vllm`; `pip install lora_vl[vllm]`).

Separate from the transformers path and imported only when asked for; not exercised by the
tests (vLLM is not installed there). Prompts are the same token ids `lora_vl.data.encode`
builds (image placeholders already expanded, which vLLM's Llava accepts), so answers are
comparable with the HF backend up to kernel numerics. vLLM applies one LoRA per request:
combine a stack into one adapter first with `lora-vl merge`.
"""
from __future__ import annotations

from lora_vl.errors import InputError
from lora_vl.evaluation.items import load_image
from lora_vl.evaluation.model_io import EvalModel, model_fingerprint, model_type, text_processor


def load_engine(base: str, adapters: list[str], gen):
    """An EvalModel whose `model` is a vllm.LLM (the processor still comes from the checkpoint)."""
    try:
        import vllm
    except ImportError as e:
        raise ImportError("generation.backend 'vllm' needs vLLM: pip install 'lora_vl[vllm]'") from e
    from transformers import AutoProcessor, AutoTokenizer

    if len(adapters) > 1:
        raise InputError(f"vLLM applies one LoRA adapter per request, got {len(adapters)}; merge them into "
                         f"one with `lora-vl merge` (or use generation.backend=hf, which stacks them)")
    is_vlm = model_type(base, gen.revision) == "llava"
    kwargs = {"quantization": "bitsandbytes"} if gen.quantization == "4bit" else {}
    llm = vllm.LLM(model=base, revision=gen.revision, enable_lora=bool(adapters), seed=0, **kwargs)
    if is_vlm:
        processor = AutoProcessor.from_pretrained(base, revision=gen.revision)
        tokenizer = processor.tokenizer
    else:
        tokenizer = AutoTokenizer.from_pretrained(base, revision=gen.revision)
        processor = text_processor(tokenizer)
    em = EvalModel(llm, tokenizer, processor, is_vlm, model_fingerprint(base, adapters, gen.revision, gen.quantization))
    em.lora = adapters[0] if adapters else None
    return em


def generate_texts(em, items, prompts, *, max_new_tokens: int, on_batch) -> None:
    """Greedy answers for all prompts in one vLLM call (it batches internally), then stored."""
    import vllm
    from vllm.lora.request import LoRARequest

    params = vllm.SamplingParams(temperature=0.0, max_tokens=max_new_tokens)
    requests = []
    for it, p in zip(items, prompts):
        req = {"prompt_token_ids": p["input_ids"]}
        if it.has_image:
            req["multi_modal_data"] = {"image": load_image(it)}
        requests.append(req)
    lora = LoRARequest("adapter", 1, em.lora) if getattr(em, "lora", None) else None
    outs = em.model.generate(requests, params, lora_request=lora)
    on_batch(list(range(len(items))), [o.outputs[0].text.strip() for o in outs])
