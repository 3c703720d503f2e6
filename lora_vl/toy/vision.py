"""The toy vision encoder: a CLIP vision tower trained on the world's training pictures with
attribute heads (object, colour, count; written activity and header for typography), then
saved as a full hub-style `CLIPModel` + `CLIPImageProcessor` and frozen, as LLaVA freezes CLIP.

The heads read the penultimate layer (the one LLaVA-1.5 feeds its projector): its CLS token and
the mean of its patch tokens, so what the heads need is in what Llava sees; the toy recipes keep
the CLS token (`vision_feature_select_strategy: full`), a one-token summary a tiny LM can find.
The last layer and the text tower are saved trained / untrained: Llava never uses them.
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from lora_vl.toy import images as I
from lora_vl.toy import lexicon as L
from lora_vl.toy.scale import Scale
from lora_vl.toy.space import Ledger, Split

ACTS = list(L.TOPICS)
# every word typography can show: a bag-of-words head makes the tower read words, not memorise images
WORDS = sorted({w for a in ACTS for w in a.split()} | {w for h in L.TYPO_HEADERS for w in h.split()})
OBJ_NAMES = [o.name for o in L.OBJECTS]
COLOR_NAMES = list(L.COLORS)
HEADS = {"object": len(OBJ_NAMES) + 1, "color": len(COLOR_NAMES) + 1, "count": len(L.COUNTS) + 1,
         "act": len(ACTS) + 1, "header": len(L.TYPO_HEADERS) + 1}   # last class: "not this kind of picture"
PATCH = 16


def training_pictures(split: Split, ledger: Ledger, n: int, rng: random.Random):
    """n (image, labels) pairs from training cells: half object pictures, half typography."""
    objects = [(o, col) for o in OBJ_NAMES for col in split.columns("visual", o)]
    texts = [(a, col) for a in ACTS for col in split.columns("typo", a)]
    out = []
    for i in range(n):
        if i % 2 == 0:
            o, col = rng.choice(objects)
            ledger.use(("visual", o, col), held_out=False)
            color, count = col.split("/")
            img = I.draw_objects(o, color, int(count), rng)
            labels = [OBJ_NAMES.index(o), COLOR_NAMES.index(color), L.COUNTS.index(int(count)), len(ACTS),
                      len(L.TYPO_HEADERS)]
        else:
            act, col = rng.choice(texts)
            ledger.use(("typo", act, col), held_out=False)
            header, align = L.TYPO_LAYOUTS[int(col)]
            img = I.draw_text(I.typo_lines(act, header), align, rng.choice(list(I.INKS)), rng)
            labels = [len(OBJ_NAMES), len(COLOR_NAMES), len(L.COUNTS), ACTS.index(act), L.TYPO_HEADERS.index(header)]
        words = set() if i % 2 == 0 else set(act.split()) | set(header.split())
        out.append((np.asarray(img), labels, [float(w in words) for w in WORDS]))
    return out


def to_pixels(arrays: np.ndarray) -> torch.Tensor:
    """uint8 NHWC -> what CLIPImageProcessor gives for 64x64 input (rescale, CLIP mean/std)."""
    x = torch.from_numpy(arrays).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def clip_config(scale: Scale) -> CLIPConfig:
    h = scale.vis_hidden
    vision = dict(hidden_size=h, intermediate_size=4 * h, num_hidden_layers=scale.vis_layers,
                  num_attention_heads=max(1, h // 32), image_size=I.SIZE, patch_size=PATCH)
    text = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                max_position_embeddings=16, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return CLIPConfig(vision_config=vision, text_config=text, projection_dim=32)


class Heads(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.heads = nn.ModuleDict({k: nn.Linear(2 * hidden, n) for k, n in {**HEADS, "words": len(WORDS)}.items()})

    def forward(self, vision_out) -> dict[str, torch.Tensor]:
        h = vision_out.hidden_states[-2]            # what Llava reads: layer -2 (CLS + patch tokens)
        feats = torch.cat([h[:, 0], h[:, 1:].mean(1)], dim=-1)
        return {k: h(feats) for k, h in self.heads.items()}


def train_vision(out: Path, split: Split, ledger: Ledger, scale: Scale, seed: int) -> dict:
    """Train the tower + heads on training pictures; save CLIPModel + processor at `out`."""
    torch.manual_seed(seed)
    rng = random.Random(f"{seed}-vision")
    model = CLIPModel(clip_config(scale))
    tower, heads = model.vision_model, Heads(scale.vis_hidden)
    pics = training_pictures(split, ledger, scale.vis_images, rng)
    pixels = to_pixels(np.stack([p for p, _, _ in pics]))
    labels = torch.tensor([label for _, label, _ in pics])
    words = torch.tensor([w for _, _, w in pics])
    params = list(tower.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=scale.vis_lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=scale.vis_lr, total_steps=scale.vis_steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(seed)
    tower.train()
    loss_value = float("nan")
    for _step in range(scale.vis_steps):
        idx = torch.randint(0, len(pics), (scale.vis_batch,), generator=gen)
        logits = heads(tower(pixel_values=pixels[idx], output_hidden_states=True))
        loss = sum(nn.functional.cross_entropy(logits[k], labels[idx, i]) for i, k in enumerate(HEADS))
        loss = loss + 4 * nn.functional.binary_cross_entropy_with_logits(logits["words"], words[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        loss_value = loss.item()
    tower.eval()
    acc = head_accuracy(tower, heads, split, scale, seed)
    model.save_pretrained(out)
    CLIPImageProcessor(size={"shortest_edge": I.SIZE},
                       crop_size={"height": I.SIZE, "width": I.SIZE}).save_pretrained(out)
    return {"steps": scale.vis_steps, "final_loss": round(loss_value, 4), "pictures": len(pics),
            "held_out_head_accuracy": acc}


@torch.no_grad()
def head_accuracy(tower, heads, split: Split, scale: Scale, seed: int, n: int = 400) -> dict[str, float]:
    """Accuracy of each head on fresh pictures of HELD-OUT cells (unseen colour x count combinations
    and typography layouts): does the encoder see what the world shows?"""
    rng = random.Random(f"{seed}-vision-eval")
    held = Split(split.seed, train=split.held_out)  # draw from the held-out side
    pics = training_pictures(held, Ledger(), min(n, max(8, scale.vis_images // 4)), rng)
    logits = heads(tower(pixel_values=to_pixels(np.stack([p for p, _, _ in pics])), output_hidden_states=True))
    labels = torch.tensor([label for _, label, _ in pics])
    out = {}
    for i, k in enumerate(HEADS):
        relevant = labels[:, i] != HEADS[k] - 1   # only pictures of the kind this head is about
        pred = logits[k].argmax(-1)
        out[k] = round((pred[relevant] == labels[relevant, i]).float().mean().item(), 3) if relevant.any() else None
    return out
