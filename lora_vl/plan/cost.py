"""Step time from FLOPs (and, for decoding, bytes read) at a stated GPU peak and utilization.

A PREDICTION, not a measurement: time = FLOPs actually executed / (peak × utilization). The
FLOPs count what the kit's step runs: the frozen base needs input gradients only (no weight
gradients), LoRA factors need both, gradient checkpointing recomputes every checkpointed
layer's forward once. The frozen vision tower runs forward only (the stages remove transformers'
input-embedding grad hooks, `models/lora.py:prepare_base`); a trained projector adds its weight
gradients; where the projector is frozen too (safety stages) nothing before the first decoder
layer needs a gradient, so that layer's q/k/v input gradients are not computed. Decoding one token is
bound by reading the weights and the KV cache, so its time is the larger of the FLOP time and
the byte time at the stated bandwidth × efficiency. Offloaded activation checkpoints add their
copies over the host link (PCIe) at the stated efficiency.
"""
from __future__ import annotations

from dataclasses import dataclass

from lora_vl.plan.shapes import ModelShape

# spec-sheet dense bf16 tensor peak (FP32 accumulate), memory bandwidth, and the host link per
# direction (PCIe 5.0 x16 on the H100 SXM, 4.0 x16 on the others)
GPUS = {
    "h100-sxm": (989e12, 3.35e12, 64e9),
    "a100-80gb": (312e12, 2.039e12, 32e9),
    "rtx4090": (165.2e12, 1.008e12, 32e9),
    "rtx3090": (71e12, 0.936e12, 32e9),
}


@dataclass
class Gpu:
    name: str
    peak_flops: float
    bandwidth: float  # bytes/s
    host_bandwidth: float  # bytes/s each way between pinned host memory and the card
    utilization: float = 0.30  # share of the FLOP peak a QLoRA step reaches (assumed)
    bandwidth_efficiency: float = 0.70  # share of the bandwidth decoding reaches (assumed)
    host_efficiency: float = 0.80  # share of the host link a pinned copy reaches (assumed)


def lm_linear_params(shape: ModelShape) -> tuple[int, list[tuple[int, int]]]:
    """(params of one decoder layer's linears, their (in, out) sizes)."""
    t = shape.text
    h, inter = t.hidden_size, t.intermediate_size
    hd = getattr(t, "head_dim", None) or h // t.num_attention_heads
    q, kv = t.num_attention_heads * hd, (getattr(t, "num_key_value_heads", None) or t.num_attention_heads) * hd
    sizes = [(h, q), (h, kv), (h, kv), (q, h), (h, inter), (h, inter), (inter, h)]
    return sum(i * o for i, o in sizes), sizes


def vision_forward_flops(shape: ModelShape, images: int) -> float:
    v = shape.vision
    tokens = (v.image_size // v.patch_size) ** 2 + 1
    per_layer = 2 * tokens * (4 * v.hidden_size ** 2 + 2 * v.hidden_size * v.intermediate_size) \
        + 4 * tokens ** 2 * v.hidden_size
    return images * v.num_hidden_layers * per_layer + projector_flops(shape, images)


def projector_flops(shape: ModelShape, images: int) -> float:
    v = shape.vision
    return images * 2 * shape.image_tokens * (v.hidden_size * shape.text.hidden_size + shape.text.hidden_size ** 2)


def train_flops(shape: ModelShape, kind: str, rows: int, length: int, trained_r: int = 0,
                frozen_r: int = 0, checkpointing: bool = True, loss_chunk: int = 0) -> float:
    """FLOPs of one micro-batch's forward + backward (DPO: + the reference forward, in which only
    the frozen adapters are active). `trained_r` / `frozen_r`: summed LoRA ranks. `loss_chunk` > 0
    (`train/chunked.py`): lm_head runs on the scored positions only, and once more in the backward
    (each chunk is recomputed); 0: on every position, forward and input gradient."""
    t = shape.text
    n = t.num_hidden_layers
    tokens = rows * length
    lin, sizes = lm_linear_params(shape)
    hd = getattr(t, "head_dim", None) or t.hidden_size // t.num_attention_heads
    attn = 2 * tokens * length * t.num_attention_heads * hd  # causal QK^T and AV, per layer
    layer_fwd = 2 * tokens * lin + attn
    per_rank = 2 * tokens * sum(i + o for i, o in sizes)  # one rank of LoRA on every linear
    lora_fwd = per_rank * (trained_r + frozen_r)
    head_tokens = rows * shape.scored_per_row(length) if loss_chunk else tokens
    head_fwd = 2 * head_tokens * t.hidden_size * t.vocab_size
    vis = vision_forward_flops(shape, rows)
    # backward: input gradients of the frozen base (1×) and attention (2×); LoRA input
    # gradients for every adapter, weight gradients for the trained one
    backward = 2 * tokens * lin + 2 * attn + per_rank * (2 * trained_r + frozen_r)
    layers = n * (layer_fwd + lora_fwd + backward)
    if checkpointing:
        layers += n * (layer_fwd + lora_fwd)
    total = layers + (3 if loss_chunk else 2) * head_fwd + vis
    if kind in ("stage1", "stage2"):  # the trained projector's weight gradients
        total += projector_flops(shape, rows)
    else:  # no gradient below the first layer: its q/k/v input gradients (base and LoRA A) are skipped
        qkv = sizes[:3]
        total -= 2 * tokens * (sum(i * o for i, o in qkv) + sum(i for i, _ in qkv) * (trained_r + frozen_r))
    if kind == "dpo":  # the reference pass: forward only, no grad
        total += n * (layer_fwd + per_rank * frozen_r) + head_fwd + vis
    return float(total)


def step_seconds(flops: float, gpu: Gpu) -> float:
    return flops / (gpu.peak_flops * gpu.utilization)


def offload_seconds(host_bytes: int, gpu: Gpu) -> float:
    """The offloaded checkpoints' two copies a micro-batch (to the host in the forward, back in the
    backward) over the host link."""
    return 2 * host_bytes / (gpu.host_bandwidth * gpu.host_efficiency)


def generation_seconds(shape: ModelShape, rows: int, prompt: int, new_tokens: int, weight_bytes: int,
                       gpu: Gpu) -> dict[str, float]:
    """Prefill from FLOPs; each decode step from max(FLOP time, bytes read / bandwidth)."""
    t = shape.text
    n = t.num_hidden_layers
    lin, _ = lm_linear_params(shape)
    hd = getattr(t, "head_dim", None) or t.hidden_size // t.num_attention_heads
    kv_heads = getattr(t, "num_key_value_heads", None) or t.num_attention_heads
    prefill = n * (2 * rows * prompt * lin + 2 * rows * prompt * prompt * t.num_attention_heads * hd) \
        + 2 * rows * t.hidden_size * t.vocab_size + vision_forward_flops(shape, rows)
    decode = 0.0
    for step in range(1, new_tokens):
        ctx = prompt + step
        flops = rows * (n * (2 * lin + 4 * ctx * t.num_attention_heads * hd) + 2 * t.hidden_size * t.vocab_size)
        kv_bytes = rows * ctx * n * 2 * kv_heads * hd * 2
        decode += max(step_seconds(flops, gpu), (weight_bytes + kv_bytes) / (gpu.bandwidth * gpu.bandwidth_efficiency))
    return {"prefill_s": step_seconds(prefill, gpu), "decode_s": decode}
