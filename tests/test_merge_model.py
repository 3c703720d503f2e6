"""Merged adapters on real tiny models: logits equal base + Σ λ ΔW; PEFT and our reader load them."""
import torch
from peft import PeftModel
from peft.tuners.lora import LoraLayer

from lora_vl.merge.io import read_adapter
from lora_vl.merge.recipe import MergeRecipe
from lora_vl.merge.run import run
from lora_vl.recipe import build
from merge_helpers import LLAVA_TARGETS, peft_adapter, tiny_llama, tiny_llava

IDS = torch.tensor([[1, 5, 9, 2, 7, 3, 11, 4]])


def peft_deltas(make_base, adapter) -> dict[str, torch.Tensor]:
    """Each LoRA module's delta as PEFT itself computes it (the reference)."""
    pm = PeftModel.from_pretrained(make_base(), str(adapter))
    return {name.removeprefix("base_model.model."): mod.get_delta_weight("default").double()
            for name, mod in pm.named_modules() if isinstance(mod, LoraLayer)}


def reference_model(make_base, weighted: list[tuple[float, dict]], state_updates: dict | None = None):
    """The base with Σ λ_i ΔW_i added to the weights (and saved modules replaced)."""
    model = make_base()
    params = dict(model.named_parameters())
    with torch.no_grad():
        for lam, deltas in weighted:
            for m, d in deltas.items():
                params[f"{m}.weight"] += (lam * d).float()
        for k, v in (state_updates or {}).items():
            params[k].copy_(v)
    return model


def merge_recipe(tmp_path, inputs, **kw):
    return build(MergeRecipe, {"inputs": inputs, "output": str(tmp_path / "merged"), **kw})


def test_exact_sum_of_different_adapters_matches_dense_reference(tmp_path):
    torch.manual_seed(0)
    a = peft_adapter(tiny_llama(), tmp_path / "a", seed=1, r=4, lora_alpha=8,
                     rank_pattern={"q_proj": 2}, alpha_pattern={"v_proj": 3})
    b = peft_adapter(tiny_llama(), tmp_path / "b", seed=2, r=3, lora_alpha=5, use_rslora=True,
                     target_modules=r".*self_attn\.(q|v|o)_proj")  # a different target set
    out = run(merge_recipe(tmp_path, [{"path": str(a), "weight": 1.0}, {"path": str(b), "weight": -0.5}]))

    da, db = peft_deltas(tiny_llama, a), peft_deltas(tiny_llama, b)
    ours = read_adapter(a)
    for m, d in da.items():  # our reader's scaling (rank/alpha patterns) equals PEFT's
        torch.testing.assert_close(ours.modules[m].delta(), d, rtol=1e-5, atol=1e-6)
    ref = reference_model(tiny_llama, [(1.0, da), (-0.5, db)])
    merged = PeftModel.from_pretrained(tiny_llama(), str(out))
    with torch.no_grad():
        torch.testing.assert_close(merged(IDS).logits, ref(IDS).logits, rtol=1e-4, atol=1e-4)
        assert not torch.allclose(tiny_llama()(IDS).logits, ref(IDS).logits, atol=1e-3)
    merged_ours = read_adapter(out)
    assert merged_ours.modules["model.layers.0.self_attn.q_proj"].rank == 2 + 3
    assert merged_ours.modules["model.layers.0.mlp.up_proj"].rank == 4


def test_llava_projector_saved_module_is_averaged(tmp_path):
    torch.manual_seed(0)
    kw = {"target_modules": LLAVA_TARGETS, "modules_to_save": ["multi_modal_projector"]}
    a = peft_adapter(tiny_llava(), tmp_path / "vl", seed=3, **kw)
    b = peft_adapter(tiny_llava(), tmp_path / "safety", seed=4, r=2, **kw)
    out = run(merge_recipe(tmp_path, [{"path": str(a), "weight": 1.0}, {"path": str(b), "weight": 3.0}]))

    ra, rb = read_adapter(a), read_adapter(b)
    proj = {f"{k}": (1.0 * ra.extra[k] + 3.0 * rb.extra[k]) / 4.0 for k in ra.extra}
    assert proj and all("multi_modal_projector" in k for k in proj)
    ref = reference_model(tiny_llava, [(1.0, peft_deltas(tiny_llava, a)), (3.0, peft_deltas(tiny_llava, b))], proj)
    merged = PeftModel.from_pretrained(tiny_llava(), str(out))
    pixels = torch.randn(1, 3, 28, 28)
    ids = torch.tensor([[1, 63, 63, 63, 63, 5, 9, 2]])  # 4 image tokens: (28/14)² patches
    with torch.no_grad():
        got = merged(input_ids=ids, pixel_values=pixels).logits
        want = ref(input_ids=ids, pixel_values=pixels).logits
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert read_adapter(out).config["modules_to_save"] == ["multi_modal_projector"]


def test_projector_taken_from_named_input(tmp_path):
    kw = {"target_modules": LLAVA_TARGETS, "modules_to_save": ["multi_modal_projector"]}
    a = peft_adapter(tiny_llava(), tmp_path / "vl", seed=3, **kw)
    b = peft_adapter(tiny_llava(), tmp_path / "safety", seed=4, **kw)
    run(merge_recipe(tmp_path, [{"path": str(a)}, {"path": str(b)}], modules_to_save="safety"))
    merged, rb = read_adapter(tmp_path / "merged"), read_adapter(b)
    for k, t in rb.extra.items():
        torch.testing.assert_close(merged.extra[k], t)
