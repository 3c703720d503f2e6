"""Shared helpers for the merge tests: tiny real models, PEFT-made adapters, synthetic adapters."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import CLIPVisionConfig, LlamaConfig, LlamaForCausalLM, LlavaConfig, LlavaForConditionalGeneration

LM_TARGETS = r".*layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
LLAVA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


def llama_config() -> LlamaConfig:
    return LlamaConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=4, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=64, max_position_embeddings=64)


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(llama_config()).eval()


def tiny_llava(seed: int = 0) -> LlavaForConditionalGeneration:
    torch.manual_seed(seed)
    vc = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                          image_size=28, patch_size=14, projection_dim=16)
    cfg = LlavaConfig(vision_config=vc, text_config=llama_config(), image_token_index=63)
    return LlavaForConditionalGeneration(cfg).eval()


def perturb(peft_model, seed: int) -> None:
    """LoRA B starts at zero; give every trainable tensor random values so deltas are nonzero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name or "modules_to_save" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def peft_adapter(model, out: Path, seed: int, base: str = "tiny-base", **lora_kwargs) -> Path:
    """Attach a LoRA with PEFT, perturb it, save it; patch base_model_name_or_path to `base`."""
    cfg = LoraConfig(**{"r": 4, "lora_alpha": 8, "target_modules": LM_TARGETS, **lora_kwargs})
    pm = get_peft_model(model, cfg)
    perturb(pm, seed)
    pm.save_pretrained(str(out))
    set_config(out, base_model_name_or_path=base)
    return out


def set_config(adapter: Path, **changes) -> None:
    path = Path(adapter) / "adapter_config.json"
    cfg = json.loads(path.read_text())
    cfg.update(changes)
    path.write_text(json.dumps(cfg))


def synthetic_adapter(out: Path, modules: dict[str, tuple[int, int, int]], seed: int, alpha: float = 16,
                      use_rslora: bool = False, base: str = "tiny-base", extra: dict | None = None,
                      dtype=torch.float32) -> Path:
    """An adapter dir written directly (no model): modules name -> (out, in, r); rank_pattern per module."""
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for m, (d_out, d_in, r) in modules.items():
        tensors[f"base_model.model.{m}.lora_A.weight"] = torch.randn(r, d_in, generator=g).to(dtype)
        tensors[f"base_model.model.{m}.lora_B.weight"] = torch.randn(d_out, r, generator=g).to(dtype)
    for k, t in (extra or {}).items():
        tensors[f"base_model.model.{k}"] = t
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "adapter_model.safetensors"))
    ranks = {m.replace(".", r"\."): r for m, (_, _, r) in modules.items()}
    cfg = {"peft_type": "LORA", "r": 1, "lora_alpha": alpha, "rank_pattern": ranks, "alpha_pattern": {},
           "use_rslora": use_rslora, "target_modules": sorted(modules), "base_model_name_or_path": base,
           "modules_to_save": ["multi_modal_projector"] if extra else None}
    (out / "adapter_config.json").write_text(json.dumps(cfg))
    return out


def lora_delta(path: Path, module: str) -> torch.Tensor:
    """Dense reference delta of `module` computed here from the files (independent of lora_vl.merge.io)."""
    from safetensors.torch import load_file
    cfg = json.loads((Path(path) / "adapter_config.json").read_text())
    sd = load_file(str(Path(path) / "adapter_model.safetensors"))
    A = sd[f"base_model.model.{module}.lora_A.weight"].double()
    B = sd[f"base_model.model.{module}.lora_B.weight"].double()
    r = A.shape[0]
    alpha = next((a for k, a in cfg.get("alpha_pattern", {}).items() if module.endswith(k.replace("\\", ""))),
                 cfg["lora_alpha"])
    scale = alpha / r ** 0.5 if cfg.get("use_rslora") else alpha / r
    return scale * B @ A
