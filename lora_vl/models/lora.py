"""Which weights train: LoRA on the language model's linear layers only, the projector
as a trainable module, everything else frozen. Also the projector's own file format."""
from __future__ import annotations

import contextlib
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import PeftModel, get_peft_model, prepare_model_for_kbit_training
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from lora_vl.errors import InputError
from lora_vl.handoff import check_finite, lora_config

PROJECTOR = "multi_modal_projector"
LM_PREFIX = "model.language_model."
FROZEN_DTYPES = ("float32", "compute")  # a recipe's model.frozen_dtype (see prepare_base)
TRAINED_DTYPES = ("float32", "compute")  # a recipe's model.trained_dtype (see trained_dtype)


def lm_linear_names(model) -> list[str]:
    """Leaf names of every linear layer inside the language model (4-bit or not).

    A bare ["q_proj", ...] list would also hit the CLIP tower, so targets are anchored on
    the language model's path.
    """
    import bitsandbytes as bnb

    kinds = (nn.Linear, bnb.nn.Linear4bit)
    return sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                   if n.startswith(LM_PREFIX) and isinstance(m, kinds)})


def lora_target_regex(model) -> str:
    return rf"^{re.escape(LM_PREFIX)}.*\.({'|'.join(lm_linear_names(model))})$"


def freeze_all(model) -> None:
    for p in model.parameters():
        p.requires_grad_(False)


def prepare_base(model, quantized: bool, gradient_checkpointing: bool, frozen_dtype: str = "float32",
                 offload_checkpoints: bool = False):
    """Freeze the base. For 4-bit with `frozen_dtype` "float32": PEFT's k-bit preparation, which
    stores every frozen weight that is not 4-bit (vision tower, embeddings, norms, lm_head) in fp32;
    with "compute" they stay in the dtype they were loaded in (the compute dtype), as a 16-bit base
    always does: half the bytes on a bf16 GPU, and the LM's residual stream (hence its checkpoints)
    stays bf16 because the embedding output is. The fp32 numerics that matter are the ops' own
    (RMSNorm and the loss upcast inside). Non-reentrant activation checkpointing through
    transformers' current API (PEFT would call the deprecated `gradient_checkpointing_enable`);
    `offload_checkpoints`: its `offload`, which keeps each checkpointed layer's saved input (the
    checkpoint) in pinned host memory on a GPU (torch's `save_on_cpu` around the layer's checkpoint;
    a no-op on a CPU, where the planner emulates the move: `plan/step.py:HostOffload`).

    Non-reentrant checkpointing needs no input that requires grad, yet transformers (and PEFT,
    see `quiet_peft`) hook every input embedding to require it — the frozen CLIP's patch
    embedding too, which sends backward through the whole vision tower. The hooks are removed."""
    if frozen_dtype not in FROZEN_DTYPES:
        raise ValueError(f"frozen_dtype {frozen_dtype!r}: expected one of {FROZEN_DTYPES}")
    if quantized and frozen_dtype == "float32":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    else:
        freeze_all(model)
    if gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False},
                                              offload=offload_checkpoints)
        model.disable_input_require_grads()
    return model


def trained_dtype(model, setting: str) -> torch.dtype:
    """The dtype a recipe's `model.trained_dtype` keeps the trained weights (LoRA factors, a trained
    projector) in. "float32" (the default): fp32 master weights whatever the base's dtype, because
    in bf16 an Adam update smaller than 2^-8 of its weight rounds away and micro-batch gradients
    accumulate in bf16. "compute": the dtype the model computes in, read from the input embedding
    before preparation casts anything (bf16 on a GPU; fp32 on a CPU, where the two are the same):
    half the bytes of the weights, their gradients and Adam's states. fp16 is refused: fp16 weights
    and gradients overflow without a loss scaler, which the loop does not run."""
    if setting not in TRAINED_DTYPES:
        raise ValueError(f"trained_dtype {setting!r}: expected one of {TRAINED_DTYPES}")
    dtype = model.get_input_embeddings().weight.dtype if setting == "compute" else torch.float32
    if dtype not in (torch.bfloat16, torch.float32):
        raise InputError(f"model.trained_dtype: compute needs a bf16 or fp32 model; this one computes in {dtype} "
                         "(fp16 weights overflow without a loss scaler): use model.trained_dtype: float32")
    return dtype


def train_in(model, dtype: torch.dtype) -> None:
    """Cast what trains to `dtype` (PEFT makes LoRA factors fp32, a trained projector copy keeps the base's)."""
    for p in model.parameters():
        if p.requires_grad and p.dtype != dtype:
            p.data = p.data.to(dtype)


def frozen_adapters_in(model, dtype: torch.dtype) -> None:
    """Store the frozen LoRA factors (a safety stage's VL adapter) in `dtype`. PEFT loads an adapter
    in fp32 (`autocast_adapter_dtype`) whatever the base's dtype; a frozen one never updates, and a
    GPU's bf16 autocast runs its matmuls on bf16 casts of its weights anyway (PEFT's 4-bit LoRA
    layer casts no input under autocast), so bf16 storage gives the same numbers at half the bytes."""
    for name, p in model.named_parameters():
        if not p.requires_grad and ".lora_" in name and p.dtype != dtype:
            p.data = p.data.to(dtype)


@contextlib.contextmanager
def quiet_peft():
    """Wrap a model with PEFT the kit's way. PEFT 0.21 (1) reads transformers' deprecated
    `is_gradient_checkpointing`, a FutureWarning that is PEFT's, not the user's, so it is not
    shown; (2) on a 16-bit model hooks every input embedding to require grad (for reentrant
    checkpointing; see `prepare_base`): the caller removes it with `drop_input_grad_hooks`."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.* is deprecated", category=FutureWarning)
        yield


def drop_input_grad_hooks(peft_model) -> None:
    peft_model.get_base_model().disable_input_require_grads()


def add_lora(model, settings, train_projector: bool, seed: int = 0, targets: str | None = None):
    """Wrap `model` with a fresh LoRA (a recipe's `lora:` settings) on every LM linear of a Llava, or
    on `targets` (PEFT's target_modules, e.g. "all-linear" for a causal LM)."""
    config = lora_config(settings, targets or lora_target_regex(model), [PROJECTOR] if train_projector else None)
    torch.manual_seed(seed)
    with quiet_peft():
        peft_model = get_peft_model(model, config)
    drop_input_grad_hooks(peft_model)
    return peft_model


def param_groups(model, lr: float, lr_projector: float | None) -> list[dict]:
    lora, proj = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (proj if PROJECTOR in name else lora).append(p)
    groups = [{"params": lora, "lr": lr}] if lora else []
    if proj:
        groups.append({"params": proj, "lr": lr_projector if lr_projector is not None else lr})
    return groups


def projector_module(model) -> nn.Module:
    return model.get_submodule(f"model.{PROJECTOR}")


def save_projector(model, path: Path) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in projector_module(model).state_dict().items()}
    save_file(state, str(path))


def load_projector(model, path: str | Path) -> None:
    """Load a stage-1 projector, checking it fits this vision encoder and LM."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: projector weights not found (expected stage 1's projector.safetensors)")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise InputError(f"{path}: not a readable safetensors file ({e}); expected stage 1's projector") from e
    check_finite(path, state.items())
    proj = projector_module(model)
    for key, param in proj.state_dict().items():
        if key not in state:
            raise InputError(f"{path}: missing projector weight {key!r}")
        if state[key].shape != param.shape:
            vis = model.config.vision_config.hidden_size
            txt = model.config.text_config.hidden_size
            raise InputError(f"{path}: projector weight {key!r} has shape {tuple(state[key].shape)}, "
                             f"expected {tuple(param.shape)} (vision hidden size {vis} → LM hidden size {txt}); "
                             "was it trained for another vision encoder or LM?")
    with torch.no_grad():
        for key, param in proj.state_dict().items():
            param.copy_(state[key].to(param.dtype))


@dataclass(frozen=True)
class UnsavedAdapter:
    """An adapter with these LoRA settings (a recipe's `lora:`) that has no file yet: PEFT's own
    initialisation, the layout of a saved one (`projector`: it carries a projector copy, as a VL
    adapter does). What the planner stacks to measure a stage whose parent is not trained yet."""
    settings: object
    projector: bool = False


def attach_adapters(model, adapters: list, trainable: bool = False):
    """Stack PEFT adapters on `model` (adapter dirs, or `UnsavedAdapter`s), all active (PEFT sums
    their deltas); none trains unless `trainable`."""
    if not adapters:
        return model
    names = [f"adapter_{i}" for i in range(len(adapters))]
    # before wrapping: the regex anchors on the base's module paths
    targets = lora_target_regex(model) if any(isinstance(a, UnsavedAdapter) for a in adapters) else None
    peft_model = model
    with quiet_peft():
        for i, (name, source) in enumerate(zip(names, adapters)):
            if isinstance(source, UnsavedAdapter):
                config = lora_config(source.settings, targets, [PROJECTOR] if source.projector else None)
                config.inference_mode = not trainable
                if i == 0:
                    peft_model = get_peft_model(model, config, adapter_name=name)
                else:
                    peft_model.add_adapter(name, config)
            elif i == 0:
                peft_model = PeftModel.from_pretrained(model, str(source), adapter_name=name, is_trainable=trainable)
            else:
                peft_model.load_adapter(str(source), adapter_name=name, is_trainable=trainable)
    drop_input_grad_hooks(peft_model)
    peft_model.base_model.set_adapter(names, inference_mode=not trainable)  # PEFT would mark them trainable
    return peft_model
