"""QLoRA training on tiny models of real architectures: what trains, loss, save/reload."""
import bitsandbytes as bnb
import pytest
import torch
from safetensors.torch import load_file

from lora_vl.data.config import DataConfig, DataSource
from lora_vl.data.dataset import TrainSet
from lora_vl.errors import InputError
from lora_vl.models import lora as L
from lora_vl.models.load import load_vlm
from lora_vl.models.lora import attach_adapters
from lora_vl.recipe import load_recipe
from lora_vl.train.adapt import AdaptRecipe, run_adapt
from lora_vl.train.config import LoraSettings, OptimConfig
from lora_vl.train.loop import train
from tests.conftest import COMBOS
from tests.helpers import adapt_recipe, assert_model_card

pytestmark = pytest.mark.slow  # whole adapt runs


def lora_model(base, quantization="4bit"):
    model, proc = load_vlm(base, quantization=quantization)
    model = L.prepare_base(model, quantization == "4bit", gradient_checkpointing=True)
    return L.add_lora(model, LoraSettings(r=4, alpha=8, dropout=0.0), train_projector=True), proc


def test_only_language_model_is_4bit_and_carries_lora(tiny_bases):
    model, _ = lora_model(tiny_bases[("llama", "clip")])
    for name, mod in model.named_modules():
        in_lm = ".language_model." in name
        if isinstance(mod, bnb.nn.Linear4bit):
            assert in_lm, f"{name} is 4-bit but outside the language model"
        if "vision_tower" in name or "multi_modal_projector" in name:
            assert not isinstance(mod, bnb.nn.Linear4bit) and not hasattr(mod, "lora_A"), name
    lora_layers = [n for n, m in model.named_modules()
                   if hasattr(m, "lora_A") and isinstance(m.base_layer, bnb.nn.Linear4bit)]
    lm_linears = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert {n.rsplit(".", 1)[-1] for n in lora_layers} == lm_linears
    assert len(lora_layers) == 7 * model.config.text_config.num_hidden_layers
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all("lora_" in n or "multi_modal_projector.modules_to_save" in n for n in trainable)
    assert not any("lm_head" in n or "vision_tower" in n for n in trainable)


@pytest.mark.parametrize("combo", COMBOS, ids=lambda c: "-".join(c))
def test_loss_falls_and_adapter_reloads_identically(tiny_bases, toy_world, tmp_path, combo):
    model, proc = lora_model(tiny_bases[combo])
    data = TrainSet(DataConfig(sources=[DataSource(format="llava_json", path=str(toy_world["instruct"]),
                                                   num_samples=4)], max_length=256), proc)
    assert len(data) == 4  # none dropped as overlong
    batch = data.collate([data[i] for i in range(4)])
    with torch.no_grad():
        model.eval()
        before = model(**batch).loss.item()
    cfg = OptimConfig(lr=5e-3, warmup_ratio=0.0, scheduler="constant_with_warmup", max_steps=80,
                      micro_batch_size=4, global_batch_size=4, save_every=100)
    res = train(model, L.param_groups(model, 5e-3, 1e-3), data, cfg, ckpt_dir=tmp_path / "ck",
                tb_dir=tmp_path / "tb", fingerprint="t", desc="t")
    assert res.final_loss < before - 0.3  # a repeated batch: LoRA + projector must fit it
    model.save_pretrained(tmp_path / "adapter")
    saved = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert any("multi_modal_projector" in k for k in saved) and any("lora_A" in k for k in saved)
    reloaded, _ = load_vlm(tiny_bases[combo], quantization="4bit")
    reloaded = attach_adapters(reloaded, [tmp_path / "adapter"])
    with torch.no_grad():
        model.eval()
        assert torch.equal(model(**batch).logits, reloaded(**batch).logits)


def test_stages_train_what_they_say(tiny_parts, toy_world, tmp_path):
    """Stage 1 changes only the projector; stage 2 trains LoRA + projector; the vision
    tower and the LM base weights are untouched."""
    recipe = load_recipe(AdaptRecipe, adapt_recipe(tmp_path, tiny_parts[("llama", "clip")], toy_world))
    adapter = run_adapt(recipe)
    assert_model_card(adapter)
    base, _ = load_vlm(tmp_path / "base", quantization="none")
    stage1 = load_file(tmp_path / "run/stage1/projector.safetensors")
    proj0 = L.projector_module(base).state_dict()
    assert set(stage1) == set(proj0)
    assert all(not torch.equal(stage1[k], proj0[k]) for k in stage1)
    saved = load_file(adapter / "adapter_model.safetensors")
    stage2_proj = {k.split("multi_modal_projector.")[1]: v for k, v in saved.items() if "multi_modal_projector" in k}
    assert set(stage2_proj) == set(stage1)
    assert any(not torch.equal(stage2_proj[k], stage1[k]) for k in stage1)
    assert not any("vision_tower" in k or "lm_head" in k for k in saved)
    lora_b = [v for k, v in saved.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)   # B starts at zero; it moved
    tuned, _ = load_vlm(tmp_path / "base", quantization="none")
    tuned = attach_adapters(tuned, [adapter])
    base_vis = base.model.vision_tower.state_dict()
    for k, v in tuned.base_model.model.model.vision_tower.state_dict().items():
        assert torch.equal(v, base_vis[k]), k


def test_changed_inputs_are_not_mistaken_for_a_finished_run(tiny_parts, toy_world, tmp_path):
    """A finished stage is reused only for the same recipe AND the same data and base files."""
    import json
    import shutil

    world = {k: tmp_path / f"{k}.json" for k in ("pretrain", "instruct")}
    for k, p in world.items():
        shutil.copy(toy_world[k], p)
        shutil.copytree(toy_world[k].parent / "images", tmp_path / "images", dirs_exist_ok=True)
    steps = dict(stage1__optim__max_steps=1, stage2__optim__max_steps=1)
    recipe = load_recipe(AdaptRecipe, adapt_recipe(tmp_path, tiny_parts[("llama", "clip")], world, **steps))
    run_adapt(recipe)
    assert run_adapt(recipe) == tmp_path / "run/adapter"        # same inputs: reused
    records = json.loads(world["pretrain"].read_text())
    world["pretrain"].write_text(json.dumps(records[::-1]))      # same recipe, other data
    with pytest.raises(InputError, match="stage1: already holds the result of a different recipe"):
        run_adapt(recipe)
