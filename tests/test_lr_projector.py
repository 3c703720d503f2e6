"""Stage 2 updates the projector with `lr_projector` and the LoRA weights with `lr`: the update of
each trained tensor is predicted from the optimizer's own state (AdamW's moments after the step)
and the learning rate the recipe gives that tensor, then compared with what was saved."""
import torch
from safetensors.torch import load_file
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

from lora_vl.recipe import load_recipe
from lora_vl.train.adapt import AdaptRecipe, run_adapt
from tests.helpers import adapt_recipe

LR, LR_PROJECTOR = 1e-3, 1e-5  # 100x apart: using one for the other moves a weight by ~1e-3, not ~1e-5


def capture_steps():
    """Every optimizer step's tensors: (before, after, exp_avg, exp_avg_sq, step, betas, eps, wd)."""
    steps, before = [], {}

    def pre(opt, args, kwargs):
        before.clear()
        before.update({id(p): p.detach().clone() for g in opt.param_groups for p in g["params"]})

    def post(opt, args, kwargs):
        for g in opt.param_groups:
            for p in g["params"]:
                s = opt.state[p]
                steps.append((before[id(p)], p.detach().clone(), s["exp_avg"].clone(), s["exp_avg_sq"].clone(),
                              float(s["step"]), g["betas"], g["eps"], g["weight_decay"]))
    return steps, [register_optimizer_step_pre_hook(pre), register_optimizer_step_post_hook(post)]


def adamw_update(before, exp_avg, exp_avg_sq, t, betas, eps, wd, lr):
    """torch's AdamW, from its moments: decoupled decay, then the bias-corrected Adam step."""
    b1, b2 = betas
    m_hat = exp_avg.double() / (1 - b1 ** t)
    denom = (exp_avg_sq.double() / (1 - b2 ** t)).sqrt() + eps
    return before.double() * (1 - lr * wd) - lr * m_hat / denom


def test_projector_update_uses_lr_projector(tiny_parts, toy_world, tmp_path):
    recipe = adapt_recipe(tmp_path, tiny_parts[("llama", "clip")], toy_world, stage1=None)
    r = load_recipe(AdaptRecipe, recipe, [f"stage2.optim.lr={LR:f}", f"stage2.optim.lr_projector={LR_PROJECTOR:f}",
                                          "stage2.optim.max_steps=1", "stage2.optim.warmup_ratio=0",
                                          "stage2.optim.weight_decay=0.1"])
    steps, hooks = capture_steps()
    try:
        out = run_adapt(r)
    finally:
        for h in hooks:
            h.remove()
    saved = load_file(str(out / "adapter_model.safetensors"))

    def step_of(tensor):  # the optimizer's record of this saved tensor (its value after the one step)
        found = [s for s in steps if s[1].shape == tensor.shape and torch.equal(s[1], tensor)]
        assert len(found) == 1
        return found[0]

    projector = [k for k in saved if "multi_modal_projector" in k]
    lora = [k for k in saved if "lora_" in k]
    assert len(projector) == 4 and lora and len(steps) == len(projector) + len(lora)
    for keys, lr in ((projector, LR_PROJECTOR), (lora, LR)):
        for k in keys:
            before, after, *state = step_of(saved[k])
            want = adamw_update(before, *state, lr=lr)
            assert not torch.equal(after, before), k
            torch.testing.assert_close(after.double(), want, rtol=0, atol=2e-7, msg=k)  # float32 rounding ≪ 1e-5
