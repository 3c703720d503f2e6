"""How big the toy world is: `full` (the study's world, minutes on 2 CPU cores) or `test` (seconds,
for the test suite: every file and schema of the full world, tiny models, a few steps)."""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Scale:
    name: str
    images_per_cell: int          # pictures per training (object, colour, count) or (activity, layout) cell
    max_text: int | None          # caps on record counts (None: everything the cells give)
    max_stage1: int | None
    max_stage2: int | None
    max_safety: int | None
    safety_pics_per_object: int | None
    bench_n: int                  # items per benchmark
    # language model (Llama class)
    lm_hidden: int
    lm_layers: int
    lm_heads: int
    vocab_size: int
    pretrain_steps: int
    pretrain_block: int           # tokens per packed pretraining row
    pretrain_batch: int
    pretrain_lr: float
    align_epochs: float
    align_batch: int
    align_lr: float
    # vision encoder (CLIP vision tower, trained with attribute heads)
    vis_hidden: int
    vis_layers: int
    vis_steps: int
    vis_batch: int
    vis_lr: float
    vis_images: int               # training pictures rendered for the encoder

    def as_dict(self) -> dict:
        return asdict(self)


SCALES = {
    "full": Scale("full", images_per_cell=2, max_text=None, max_stage1=None, max_stage2=None, max_safety=None,
                  safety_pics_per_object=None, bench_n=240,
                  lm_hidden=128, lm_layers=4, lm_heads=4, vocab_size=2400, pretrain_steps=1000,
                  pretrain_block=128, pretrain_batch=16, pretrain_lr=3e-3, align_epochs=5, align_batch=32,
                  align_lr=1e-3, vis_hidden=96, vis_layers=4, vis_steps=900, vis_batch=64, vis_lr=1e-3,
                  vis_images=6000),
    "test": Scale("test", images_per_cell=1, max_text=64, max_stage1=24, max_stage2=32, max_safety=12,
                  safety_pics_per_object=1, bench_n=6,
                  lm_hidden=32, lm_layers=2, lm_heads=2, vocab_size=700, pretrain_steps=3, pretrain_block=64,
                  pretrain_batch=4, pretrain_lr=3e-3, align_epochs=0.02, align_batch=8, align_lr=1e-3,
                  vis_hidden=32, vis_layers=2, vis_steps=3, vis_batch=8, vis_lr=1e-3, vis_images=32),
}
