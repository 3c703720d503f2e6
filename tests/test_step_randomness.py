"""Randomness in training (LoRA dropout) is drawn afresh for every micro-batch of every step, and
is a function of (seed, step, micro-batch) alone: a resumed run draws the masks it would have."""
import shutil

from lora_vl.data.config import DataConfig, DataSource
from lora_vl.data.dataset import TrainSet
from lora_vl.models import lora as L
from lora_vl.models.load import load_vlm
from lora_vl.train.config import LoraSettings, OptimConfig
from lora_vl.train.loop import train

CFG = OptimConfig(lr=1e-3, max_steps=2, micro_batch_size=1, global_batch_size=2, group_by_length=False,
                  save_every=1, keep_checkpoints=5, seed=3)


def dropout_masks(base, data_path, tmp_path) -> list[tuple[bool, ...]]:
    """Train (or resume) and return, per forward, which entries of the first token's hidden
    state the first LoRA dropout kept."""
    model, proc = load_vlm(base, quantization="none")
    model = L.prepare_base(model, False, gradient_checkpointing=False)  # one forward per micro-batch
    model = L.add_lora(model, LoraSettings(r=4, alpha=8, dropout=0.5), train_projector=True)
    dropout = next(m for n, m in model.named_modules() if n.endswith("lora_dropout.default"))
    masks = []
    dropout.register_forward_hook(lambda m, i, out: masks.append(tuple((out[0, 0] != 0).tolist())))
    data = TrainSet(DataConfig(sources=[DataSource(format="llava_json", path=str(data_path), num_samples=4)],
                               max_length=512), proc)
    train(model, L.param_groups(model, 1e-3, 1e-3), data, CFG, ckpt_dir=tmp_path / "ck", tb_dir=tmp_path / "tb",
          fingerprint="t", desc="t")
    return masks


def test_masks_differ_per_micro_batch_and_step_and_resume_identically(tiny_bases, toy_world, tmp_path):
    base = tiny_bases[("llama", "clip")]
    masks = dropout_masks(base, toy_world["instruct"], tmp_path)
    assert len(masks) == 4  # 2 steps x 2 micro-batches
    assert all(0 < sum(m) < len(m) for m in masks)  # p = 0.5 on a 64-wide hidden state: some kept, some dropped
    assert len(set(masks)) == 4  # a fresh draw for each micro-batch of each step

    shutil.rmtree(tmp_path / "ck" / "step-2")  # resume from step 1: only step 2's micro-batches run
    assert dropout_masks(base, toy_world["instruct"], tmp_path) == masks[2:]
