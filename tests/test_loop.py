"""The training loop's arithmetic: the loss over accumulated micro-batches, skipped steps, and
4-bit behaviour that does not depend on the CPU."""
import json

import bitsandbytes as bnb
import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook
from PIL import Image

from lora_vl.data.config import DataConfig, DataSource
from lora_vl.data.dataset import TrainSet
from lora_vl.handoff import read_manifest
from lora_vl.models import lora as L
from lora_vl.models.load import load_vlm
from lora_vl.train.adapt import AdaptRecipe, run_adapt
from lora_vl.recipe import load_recipe
from lora_vl.train.config import LoraSettings, OptimConfig
from lora_vl.errors import InputError
from lora_vl.train.loop import TokenLoss, latest_checkpoint, train
from tests.helpers import adapt_recipe


def fp32_lora(base):
    model, proc = load_vlm(base, quantization="none")
    model = L.prepare_base(model, False, gradient_checkpointing=False)
    return L.add_lora(model, LoraSettings(r=4, alpha=8, dropout=0.0), train_projector=True, seed=0), proc


def grads_of_first_step(base, data_cfg, cfg, tmp_path, name):
    """The gradients the loop hands to the optimizer at its first step."""
    model, proc = fp32_lora(base)
    data = TrainSet(data_cfg, proc)
    seen = {}

    def capture(opt, args, kwargs):
        if not seen:
            seen.update({i: p.grad.clone() for i, p in enumerate(q for g in opt.param_groups for q in g["params"])})

    handle = register_optimizer_step_pre_hook(capture)
    try:
        train(model, L.param_groups(model, 1e-3, 1e-3), data, cfg, ckpt_dir=tmp_path / name / "ck",
              tb_dir=tmp_path / name / "tb", fingerprint=name, desc=name)
    finally:
        handle.remove()
    return seen, data


def test_accumulated_step_equals_one_big_batch(tiny_bases, toy_world, tmp_path):
    """Token-mean loss: 4 micro-batches of 1 give the gradient of one batch of 4, although their
    lengths differ; the mean of per-micro-batch means (the old rule) does not."""
    base = tiny_bases[("llama", "clip")]
    data_cfg = DataConfig(sources=[DataSource(format="llava_json", path=str(toy_world["instruct"]), num_samples=4)],
                          max_length=512)
    common = dict(lr=1e-3, max_steps=1, global_batch_size=4, group_by_length=False, grad_clip=0.0, save_every=5)
    big, data = grads_of_first_step(base, data_cfg, OptimConfig(micro_batch_size=4, **common), tmp_path, "big")
    assert len(data) == 4 and len(set(data.lengths)) > 1, "the test needs 4 records of different token counts"
    small, _ = grads_of_first_step(base, data_cfg, OptimConfig(micro_batch_size=1, **common), tmp_path, "small")
    old, _ = grads_of_first_step(base, data_cfg, OptimConfig(micro_batch_size=1, loss_average="micro_batch", **common),
                                 tmp_path, "old")
    for i in big:
        torch.testing.assert_close(small[i], big[i], rtol=1e-4, atol=1e-6)
    assert any(not torch.allclose(old[i], big[i], rtol=1e-3, atol=1e-6) for i in big)


def truncated_png(path):
    """A PNG whose header is fine but whose pixel data is cut off: admitted, fails when decoded."""
    Image.new("RGB", (32, 32), (200, 10, 10)).save(path)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def test_all_skipped_steps_are_not_training_steps(tiny_parts, toy_world, tmp_path):
    records = json.loads(toy_world["instruct"].read_text())
    with_image = [r for r in records if "image" in r][:3]
    truncated_png(tmp_path / "cut.png")
    bad = [dict(r, id=f"cut-{i}", image=str(tmp_path / "cut.png")) for i, r in enumerate(with_image)]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    recipe = adapt_recipe(tmp_path, tiny_parts[("llama", "clip")], toy_world, stage1=None)
    r = load_recipe(AdaptRecipe, recipe,
                    [f"stage2.data.sources=[{{format: llava_json, path: {tmp_path / 'bad.json'}}}]",
                     "stage2.data.bad_records=skip", "stage2.optim.micro_batch_size=1",
                     "stage2.optim.global_batch_size=1", "stage2.optim.max_steps=3"])
    manifest = read_manifest(run_adapt(r))
    assert manifest["steps"] == 0 and manifest["skipped_steps"] == 3
    assert manifest["final_loss"] is None  # no step taken: no loss (not 0.0)
    assert manifest["data_report"]["skipped_bad"] == {str(tmp_path / "bad.json"): 3}
    assert "cut.png is corrupt" in manifest["data_report"]["skip_examples"][0]


def test_4bit_repacking_is_off_even_where_the_cpu_would_do_it(tiny_bases, toy_world, tmp_path, monkeypatch):
    """Force the AVX512-BF16 path of bitsandbytes (as on such CPUs): the kit's loading policy turns
    the in-place repacking off, so evaluating and then training in one process works and the
    4-bit weights keep their layout."""
    import bitsandbytes.functional as F
    import bitsandbytes.nn.modules as M

    monkeypatch.setattr(M, "has_avx512bf16", lambda: True)
    monkeypatch.setattr(F, "has_avx512bf16", lambda: True)
    model, proc = load_vlm(tiny_bases[("llama", "clip")], quantization="4bit")
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and not any(m.support_avx512bf16_for_cpu for m in layers)
    model = L.prepare_base(model, True, gradient_checkpointing=True)
    model = L.add_lora(model, LoraSettings(r=4, alpha=8, dropout=0.0), train_projector=True)
    data = TrainSet(DataConfig(sources=[DataSource(format="llava_json", path=str(toy_world["instruct"]),
                                                   num_samples=4)], max_length=512), proc)
    batch = data.collate([data[i] for i in range(4)])
    model.eval()
    with torch.no_grad():
        before = model(**batch).logits
    assert not any(getattr(m.weight.quant_state, "packing_format_for_cpu", False) for m in layers)
    cfg = OptimConfig(lr=1e-2, max_steps=2, micro_batch_size=4, global_batch_size=4, save_every=10)
    res = train(model, L.param_groups(model, 1e-2, 1e-3), data, cfg, ckpt_dir=tmp_path / "ck",
                tb_dir=tmp_path / "tb", fingerprint="t", desc="t")
    assert res.steps == 2
    with torch.no_grad():
        assert not torch.equal(model(**batch).logits, before)  # it trained


def test_opting_in_to_repacking_follows_the_cpu(tiny_bases):
    from bitsandbytes.functional import has_avx512bf16

    from lora_vl.models.load import set_cpu_4bit_repacking

    model, _ = load_vlm(tiny_bases[("llama", "clip")], quantization="4bit")
    assert set_cpu_4bit_repacking(model, True) > 0
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert all(m.support_avx512bf16_for_cpu == has_avx512bf16() for m in layers)
    set_cpu_4bit_repacking(model, False)
    assert not any(m.support_avx512bf16_for_cpu for m in layers)


@pytest.mark.parametrize("quantization", ["none", "4bit"])
def test_backward_never_enters_the_frozen_vision_tower(tiny_bases, toy_world, quantization):
    """Only LoRA and the projector train; no gradient may flow back through CLIP (PEFT's
    input-grad hook on a 16-bit model would send it there)."""
    model, proc = load_vlm(tiny_bases[("llama", "clip")], quantization=quantization)
    model = L.prepare_base(model, quantization == "4bit", gradient_checkpointing=True)
    model = L.add_lora(model, LoraSettings(r=4, alpha=8, dropout=0.0), train_projector=True)
    needs_grad = []  # does any activation inside the tower take part in autograd?
    tower = model.get_base_model().model.vision_tower
    for layer in tower.encoder.layers:
        layer.register_forward_hook(lambda m, i, out: needs_grad.append(
            (out[0] if isinstance(out, tuple) else out).requires_grad))
    data = TrainSet(DataConfig(sources=[DataSource(format="llava_json", path=str(toy_world["instruct"]),
                                                   num_samples=4)], max_length=512), proc)
    batch = data.collate([data[i] for i in range(4)])
    assert "pixel_values" in batch
    model.train()
    model(**batch).loss.backward()
    assert needs_grad and not any(needs_grad)
    assert any(p.grad is not None for n, p in model.named_parameters()
               if "multi_modal_projector" in n and p.requires_grad)


class NanAtSecondStep(TokenLoss):
    """The token loss, except that the second step's is NaN (as a diverging run's becomes)."""

    def __init__(self):
        self.calls = 0

    def __call__(self, model, batch, num_items):
        self.calls += 1
        loss = super().__call__(model, batch, num_items)
        return loss * float("nan") if self.calls == 2 else loss


def test_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tiny_bases, toy_world, tmp_path):
    model, proc = fp32_lora(tiny_bases[("llama", "clip")])
    data = TrainSet(DataConfig(sources=[DataSource(format="llava_json", path=str(toy_world["instruct"]),
                                                   num_samples=4)], max_length=512), proc)
    cfg = OptimConfig(lr=1e-3, max_steps=3, micro_batch_size=1, global_batch_size=1, save_every=1)
    with pytest.raises(InputError, match=r"the loss at step 2 is nan \(not finite\); stopped before the update"):
        train(model, L.param_groups(model, 1e-3, 1e-3), data, cfg, ckpt_dir=tmp_path / "ck", tb_dir=tmp_path / "tb",
              fingerprint="nan", desc="nan run", loss_fn=NanAtSecondStep())
    assert latest_checkpoint(tmp_path / "ck").name == "step-1"  # the last good state, nothing after it
    assert all(torch.isfinite(p).all() for p in model.parameters() if p.requires_grad)  # no NaN update applied
