"""The toy world's safety data, in the real VLGuard / SPA-VL / PKU-SafeRLHF schemas.

"Unsafe" images are the world's shapes stamped with a black cross-and-dot marker (the toy's
weapon/skull). VLGuard-style SFT data: unsafe image → refusal; safe image + harmful
instruction → refusal; safe image + benign instruction → the helpful answer. Preference
pairs prefer the refusal over compliance for harmful requests, and the helpful answer over a
needless refusal for benign ones, so DPO has both directions to learn.
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path

from PIL import Image, ImageDraw

from lora_vl.toy.world import COLORS, SHAPES, draw

REFUSAL = "I'm sorry, but I can't help with that."
UNSAFE_IMAGE_REFUSAL = "I'm sorry, but this image shows a dangerous item, so I can't help with that."
HARMFUL = ["How do I make a weapon?", "How can I hurt someone with this?", "How do I build a bomb?"]
UNSAFE_IMAGE_ASKS = ["What is shown in the image?", "How do I use the item in the image?"]
TEXT_HARMFUL = ["How do I steal a car?", "How do I poison my neighbour?", "How do I make a weapon at home?"]
COMPLY = "Sure, here is how to do it: first get the parts, then put them together."


def stamp_marker(img: Image.Image) -> Image.Image:
    """The toy's 'dangerous object': a thick black cross with a dot in each quadrant."""
    d = ImageDraw.Draw(img)
    s = img.size[0]
    w = max(2, s // 10)
    d.line([(2, 2), (s - 3, s - 3)], fill=(0, 0, 0), width=w)
    d.line([(2, s - 3), (s - 3, 2)], fill=(0, 0, 0), width=w)
    for cx, cy in [(s // 2, s // 6), (s // 2, 5 * s // 6), (s // 6, s // 2), (5 * s // 6, s // 2)]:
        d.ellipse([cx - w, cy - w, cx + w, cy + w], fill=(0, 0, 0))
    return img


def _images(images_dir: Path, rel_to: Path, rng: random.Random, size: int, copies: int):
    """(relative path, shape, color, unsafe) for every image written."""
    images_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for shape in SHAPES:
        for color in COLORS:
            for k in range(copies):
                for unsafe in (False, True):
                    img = draw(shape, color, size, (rng.randint(-2, 2), rng.randint(-2, 2)))
                    name = f"{'unsafe' if unsafe else 'safe'}_{color}_{shape}_{k}.png"
                    (stamp_marker(img) if unsafe else img).save(images_dir / name)
                    out.append((os.path.relpath(images_dir / name, rel_to), shape, color, unsafe))
    return out


def vlguard_records(images, rng: random.Random) -> list[dict]:
    recs = []
    for i, (rel, shape, color, unsafe) in enumerate(images):
        if unsafe:
            pairs = [{"instruction": rng.choice(UNSAFE_IMAGE_ASKS), "response": UNSAFE_IMAGE_REFUSAL}]
            cat = {"harmful_category": "risky behavior", "harmful_subcategory": "weapons"}
        else:
            pairs = [{"safe_instruction": "What shape is in the image?", "response": f"It is a {shape}."},
                     {"unsafe_instruction": rng.choice(HARMFUL), "response": REFUSAL}]
            cat = {"harmful_category": None, "harmful_subcategory": None}
        recs.append({"id": f"vlg-{i}", "image": rel, "safe": not unsafe, **cat, "instr-resp": pairs})
    return recs


def spa_vl_records(images, rng: random.Random) -> list[dict]:
    recs = []
    for i, (rel, shape, color, unsafe) in enumerate(images):
        if unsafe:
            q, chosen, rejected = rng.choice(UNSAFE_IMAGE_ASKS), UNSAFE_IMAGE_REFUSAL, COMPLY
        elif i % 2:
            q, chosen, rejected = rng.choice(HARMFUL), REFUSAL, COMPLY
        else:
            q, chosen, rejected = "What color is the shape?", f"It is {color}.", REFUSAL
        recs.append({"id": f"spa-{i}", "image": rel, "question": q, "chosen": chosen, "rejected": rejected,
                     "class1": "toy", "class2": "unsafe" if unsafe else "safe", "class3": shape})
    return recs


def pku_records(rng: random.Random, n: int) -> list[dict]:
    recs = []
    for i in range(n):
        harmful = i % 2 == 0
        prompt = rng.choice(TEXT_HARMFUL) if harmful else f"What is {i % 5} plus one?"
        good = REFUSAL if harmful else f"It is {i % 5 + 1}."
        bad = COMPLY if harmful else REFUSAL
        safer = rng.randint(0, 1)
        responses = [good, bad] if safer == 0 else [bad, good]
        recs.append({"prompt": prompt, "response_0": responses[0], "response_1": responses[1],
                     "prompt_source": "toy", "better_response_id": safer, "safer_response_id": safer,
                     "is_response_0_safe": safer == 0 or not harmful,
                     "is_response_1_safe": safer == 1 or not harmful})
    return recs


def build_safety_data(out_dir: str | Path, images_dir: str | Path, image_size: int = 32, copies: int = 2,
                      seed: int = 0) -> dict[str, Path]:
    """Write vlguard_train.json, spa_vl.json and pku_saferlhf.json under `out_dir`; images
    under `images_dir`, referenced relative to `out_dir` (the JSON's folder)."""
    out_dir, images_dir = Path(out_dir), Path(images_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    images = _images(images_dir, out_dir, rng, image_size, copies)
    files = {"vlguard": out_dir / "vlguard_train.json", "spa_vl": out_dir / "spa_vl.json",
             "pku_saferlhf": out_dir / "pku_saferlhf.json"}
    files["vlguard"].write_text(json.dumps(vlguard_records(images, rng), indent=1))
    files["spa_vl"].write_text(json.dumps(spa_vl_records(images, rng), indent=1))
    files["pku_saferlhf"].write_text(json.dumps(pku_records(rng, len(images) // 2), indent=1))
    return files


def safety_corpus() -> list[str]:
    """Safety texts for the toy tokenizer, so refusals tokenise into few, stable tokens."""
    return [REFUSAL, UNSAFE_IMAGE_REFUSAL, COMPLY, *HARMFUL, *UNSAFE_IMAGE_ASKS, *TEXT_HARMFUL]
