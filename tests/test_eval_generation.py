"""Batched greedy decoding (left padding) gives exactly the batch-1 tokens on tiny real models."""
import random

from eval_helpers import tiny_world  # noqa: F401  (session fixture)

from lora_vl.evaluation.generate import generate_tokens
from lora_vl.evaluation.items import EvalItem
from lora_vl.evaluation.model_io import encode_item, load_eval_model
from lora_vl.evaluation.suite import GenerationSpec
from lora_vl.toy.images import draw_objects

PROMPTS = ["What color is the shape in the image?", "hi", "Describe the picture in a few words, please.",
           "I cannot help with that request, can you?", "a red circle"]


def items(with_images: bool) -> list[EvalItem]:
    rng = random.Random(0)
    imgs = [draw_objects("cake", "red", 1, rng), None, draw_objects("kite", "blue", 2, rng), None,
            draw_objects("bomb", "green", 3, rng)]
    return [EvalItem(id=str(i), prompt=p, benchmark="t", category="c", image=im if with_images else None)
            for i, (p, im) in enumerate(zip(PROMPTS, imgs))]


def both(em, its, max_new=12):
    prompts = [encode_item(em, it) for it in its]
    assert len({len(p["input_ids"]) for p in prompts}) > 1  # padding really happens
    batched = generate_tokens(em.model, em.tokenizer, prompts, batch_size=len(prompts), max_new_tokens=max_new)
    single = generate_tokens(em.model, em.tokenizer, prompts, batch_size=1, max_new_tokens=max_new)
    return batched, single


def test_base_llm_text_only(tiny_world):
    em = load_eval_model(str(tiny_world["lm"]), [], GenerationSpec(), device="cpu")
    assert not em.is_vlm
    batched, single = both(em, items(with_images=False))
    assert batched == single and any(batched)


def test_llava_with_images(tiny_world):
    em = load_eval_model(str(tiny_world["llava"]), [], GenerationSpec(), device="cpu")
    assert em.is_vlm
    batched, single = both(em, items(with_images=True))
    assert batched == single


def test_llava_with_adapter(tiny_world):
    plain = load_eval_model(str(tiny_world["llava"]), [], GenerationSpec(), device="cpu")
    em = load_eval_model(str(tiny_world["llava"]), [str(tiny_world["adapter"])], GenerationSpec(), device="cpu")
    batched, single = both(em, items(with_images=True))
    assert batched == single
    assert batched != both(plain, items(with_images=True))[0]  # the adapter is active (nonzero B)
    assert em.fingerprint != plain.fingerprint


def test_stacked_adapters(tiny_world):
    em = load_eval_model(str(tiny_world["llava"]), [str(tiny_world["adapter"])] * 2, GenerationSpec(),
                         device="cpu")
    batched, single = both(em, items(with_images=True)[:3], max_new=8)
    assert batched == single
