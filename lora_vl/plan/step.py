"""One measured piece of real work: a training step of a stage, or a generation call.

A step is the loop's own (`train/loop.py`): `accumulate` runs the stage's loss (from
`train/prepare.py`: `TokenLoss`, or `DpoLoss` with its reference pass) and backward under
training's autocast policy for a GPU, then `optimizer_step` clips and steps the optimizer made by
`make_optimizer`. It is measured in its steady state: the optimizer state exists already (made
by a zero-gradient `optimizer_step` first), and with gradient accumulation the measured
micro-batch is the step's second, the first one's gradients alive. Generation is the
evaluation's `generate_tokens` (batched greedy decoding with the KV cache).

On a CPU that emulates bf16 (AVX2 only) the step's matmuls run in fp32 with bf16 results
(`cpu_bf16.py`): the same tensors, ~500x faster there.

Phases, set by hooks, split the peak so that it extrapolates over depth: where in the step the
peak sits (loss head, first or last decoder layer of the backward, optimizer) can change with
depth, but each phase's peak is linear in the number of layers.
"""
from __future__ import annotations

import contextlib
import functools
import math
import time
import warnings
import weakref
from dataclasses import dataclass, field
from types import SimpleNamespace

import torch
from torch.utils._python_dispatch import _disable_current_modes
from transformers.utils import logging as hf_logging

from lora_vl.data.encode import IGNORE
from lora_vl.errors import InputError
from lora_vl.evaluation.generate import generate_tokens
from lora_vl.plan.build import Workload, build_llava, prepare
from lora_vl.plan.cpu_bf16 import for_device as fp32_compute
from lora_vl.plan.shapes import ModelShape
from lora_vl.plan.tracker import LiveBytes, PhasePeak
from lora_vl.train.loop import accumulate, autocast_policy, make_optimizer, optimizer_step, to_device
from lora_vl.train.prepare import Prepared

STEP_EVENT = "lora_vl.plan.step"  # the measured work, as it appears in a torch profiler trace
PAGED_MIN_NUMEL = 100_000  # bitsandbytes pages optimizer states of params with at least 1e5 elements

CATEGORIES = {  # tensors alive before the step, by what they belong to
    "4bit": "base weights (4-bit)",
    "base16": "base weights (embeddings, norms, lm_head)",
    "vision": "vision tower",
    "projector": "projector",
    "lora": "LoRA params (trained)",
    "frozen_lora": "frozen adapters",
    "inputs": "inputs",
}


@dataclass
class Measured:
    layers: int
    micro_batch: int
    phases: dict[str, PhasePeak]
    seconds: float
    params: dict[str, int] = field(default_factory=dict)  # exact bytes of what was alive before
    stats: dict = field(default_factory=dict)  # step_s; on CUDA max_memory_allocated

    @property
    def peak(self) -> int:
        return max(p.bytes for p in self.phases.values())


def make_batch(shape: ModelShape, rows: int, length: int, seed: int = 0) -> dict:
    """`rows` full-length samples, each with one image (the worst case: no padding)."""
    n_img = shape.image_tokens
    if length <= n_img + 1:
        raise InputError(f"max_length {length}: leaves no room for text after the {n_img} image tokens")
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, shape.vocab_size, (rows, length), generator=g)
    ids[ids == shape.image_token_id] = (shape.image_token_id + 1) % shape.vocab_size
    ids[:, 1:1 + n_img] = shape.image_token_id
    labels = ids.clone()
    labels[:, :1 + n_img] = IGNORE  # the prompt (image) is not trained on, as encode does
    size = shape.vision.image_size
    pixels = torch.randn(rows, 3, size, size, generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels, "pixel_values": pixels}


def known_tensors(model) -> dict[str, list[torch.Tensor]]:
    """Every tensor of the model (4-bit quantization state included), by category."""
    out = {k: [] for k in CATEGORIES}
    for name, p in model.named_parameters():
        if type(p).__name__ == "Params4bit":
            qs = p.quant_state
            out["4bit"] += [p, qs.absmax, qs.code, qs.offset]
            if qs.state2 is not None:
                out["4bit"] += [qs.state2.absmax, qs.state2.code]
        elif "lora_" in name:
            out["lora" if p.requires_grad else "frozen_lora"].append(p)
        elif ".vision_tower." in name:
            out["vision"].append(p)
        elif "multi_modal_projector" in name:
            out["projector"].append(p)
        else:
            out["base16"].append(p)
    for name, b in model.named_buffers():
        out["vision" if ".vision_tower." in name else "base16"].append(b)
    return out


def storage_bytes(tensors) -> int:
    seen = {}
    for t in tensors:
        if isinstance(t, torch.Tensor) and not t.is_meta:
            seen[t.untyped_storage()._cdata] = t.untyped_storage().nbytes()
    return sum(seen.values())


class PhaseHooks:
    """Module hooks that switch the tracker's phase: vision tower → decoder layers → head in the
    forward; head → top layer → middle → bottom layer (and the rest) in the backward."""

    def __init__(self, model, tracker: LiveBytes):
        self.tracker, self.handles, self.in_backward = tracker, [], False
        llava = _llava(model)
        layers = llava.model.language_model.layers
        n = len(layers)
        self.handles.append(layers[0].register_forward_pre_hook(self._forward("forward.layers")))
        self.handles.append(llava.lm_head.register_forward_pre_hook(self._forward("forward.head")))
        for i, layer in enumerate(layers):
            name = "backward.top" if i == n - 1 else "backward.bottom" if i == 0 else "backward.middle"
            self.handles.append(layer.register_forward_hook(self._on_output(name)))

    def _forward(self, name):
        def hook(module, args):
            if not self.in_backward:  # recomputation in the backward runs forwards too
                self.tracker.phase(name)
        return hook

    def _on_output(self, name):
        def hook(module, args, out):
            hidden = out[0] if isinstance(out, tuple) else out
            if not self.in_backward and isinstance(hidden, torch.Tensor) and hidden.requires_grad:
                hidden.register_hook(lambda grad: self.tracker.phase(name))
        return hook

    def remove(self):
        for h in self.handles:
            h.remove()


def _llava(model):
    """The LlavaForConditionalGeneration inside a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def measure(shape: ModelShape, w: Workload, layers: int, micro_batch: int, device: torch.device,
            cache: dict | None = None) -> Measured:
    """Build `shape` at `layers` decoder layers, run `w` at `micro_batch`, return the peaks.

    `cache` (one plan's depths share it) keeps the random weights for the next build, alive
    through this step; the tracker does not count them, but CUDA's max_memory_allocated would
    (~1 GiB at the 7B). Without one, nothing of the build outlives it: the full-size `--measure`."""
    t0 = time.time()
    model = build_llava(shape.llava_config(layers), w.quantization, device, {} if cache is None else cache)
    prepared = prepare(model, w)
    del model
    rows = 2 * micro_batch if w.kind == "dpo" else micro_batch
    run = generate if w.kind == "eval" else train_step
    phases, params, stats = run(prepared, shape, w, rows, device)
    del prepared
    return Measured(layers, micro_batch, phases, time.time() - t0, params, stats)


def _tracker(model, shape, device, optimizer=None, paged=False, kv_shape=None) -> tuple[LiveBytes, dict]:
    tracker = LiveBytes(device.type, vocab_size=shape.vocab_size, params=list(model.parameters()),
                        optimizer=optimizer, paged_min_numel=PAGED_MIN_NUMEL if paged else None,
                        kv_shape=kv_shape)
    params = {}
    for key, tensors in known_tensors(model).items():
        tracker.add_known(tensors, CATEGORIES[key])
        params[CATEGORIES[key]] = storage_bytes(tensors)
    return tracker, params


def train_step(st: Prepared, shape: ModelShape, w: Workload, rows: int, device: torch.device):
    """One optimizer step of the stage through the loop's own `accumulate` and `optimizer_step`,
    under training's autocast policy on a GPU (the device the plan is for), tracked."""
    model, trainable = st.model, st.trainable
    optimizer = make_optimizer(st.groups, w.optim)
    if isinstance(optimizer, torch.optim.AdamW) and device.type != "cuda":
        for g in optimizer.param_groups:  # torch's default on CUDA tensors; on CPU it would loop
            g["foreach"] = True
    for p in trainable:  # steady state: the optimizer state exists from the first step on
        p.grad = torch.zeros_like(p)
    optimizer_step(trainable, optimizer, w.optim)
    accum = w.optim.global_batch_size // w.optim.micro_batch_size
    batch = to_device(make_batch(shape, rows, w.length), device, st.pixel_dtype)
    # with accumulation the peak is a later micro-batch's, the earlier ones' gradients alive: the
    # second is the steady state (every later one is alike), so two of the step's `accum` are run
    runs = min(accum, 2)
    counts = [st.loss_fn.count(batch)] * runs
    offload = HostOffload() if w.policy.offload and device.type != "cuda" else None
    if offload is not None and not offload.install(model):
        raise RuntimeError("offload_checkpoints: no checkpointed layer found to offload")

    def step(tracker=None, hooks=None):
        def on_phase(name):
            if hooks is not None:
                hooks.in_backward = name == "backward"
            _phase(tracker, "forward.vision" if name == "forward" else "backward.head")

        with fp32_compute(device), tracker or contextlib.nullcontext(), torch.profiler.record_function(STEP_EVENT):
            accumulate(model, 0, list(enumerate([batch] * runs)), counts, counts[0] * accum, accum, st.loss_fn, w.optim,
                       device, st.pixel_dtype, autocast=autocast_policy("cuda", run_on=device.type), on_phase=on_phase)
            _phase(tracker, "optimizer")
            optimizer_step(trainable, optimizer, w.optim)

    # on a GPU these states live in managed memory, outside the allocator
    tracker, params = _tracker(model, shape, device, optimizer, paged=w.optim.optimizer.startswith("paged"))
    states = [v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
    tracker.add_known(states, "optimizer state")  # relabelled (paged or not) when a breakdown is taken
    # gradients alive before the step (none while the loop clears them to None) are counted too
    tracker.add_known([p.grad for p in trainable if p.grad is not None], "gradients")
    params["optimizer state"] = storage_bytes(states)
    tracker.add_known(batch.values(), CATEGORIES["inputs"])
    params[CATEGORIES["inputs"]] = storage_bytes(batch.values())
    hooks = PhaseHooks(model, tracker)
    model.train()
    try:
        stats = _timed(device, lambda: step(tracker, hooks))
    finally:
        hooks.remove()
    if device.type == "cuda":  # the same step without the tracker, for its time
        stats["step_s"] = min(_timed(device, step)["step_s"] for _ in range(2))
    stats["step_s"] /= runs  # per micro-batch
    stats["micro_batches"] = runs
    # a chunked loss's logits grow with the labelled tokens only up to one chunk (fit.py)
    stats["labelled_tokens"] = int((batch["labels"][:, 1:] != IGNORE).sum())
    stats["loss_chunk"] = w.loss_chunk_tokens
    if not math.isfinite(sum(float(p.detach().float().sum()) for p in trainable)):
        raise RuntimeError("the measured step produced non-finite weights")
    stats["autocast_gaps"] = sorted(tracker.autocast_gaps)
    if offload is not None:
        stats["host_offload_peak"] = offload.peak
    return tracker.finish(), params, stats


class HostOffload:
    """`model.offload_checkpoints` on the measuring CPU, where transformers' offload (torch's
    `save_on_cpu` around each layer's checkpoint) moves nothing: the same checkpoint call under
    hooks that make the move out of the tracker's sight — the copy to host memory untracked, the
    copy back a tracked allocation (on a GPU: the host-to-device copy) — so the tracked peak is the
    GPU's with the offload. The host bytes alive are counted on the side."""

    def __init__(self):
        self.live = self.peak = 0

    def install(self, model) -> int:
        """Each checkpointed layer's checkpoint call under these hooks; returns how many layers."""
        n = 0
        for m in model.modules():
            f = getattr(m, "_gradient_checkpointing_func", None)
            if isinstance(f, functools.partial):
                m._gradient_checkpointing_func = functools.partial(self._checkpoint, **f.keywords)
                n += 1
        return n

    def _checkpoint(self, function, *args, **kwargs):
        with torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack):
            return torch.utils.checkpoint.checkpoint(function, *args, **kwargs)

    def _pack(self, t: torch.Tensor):
        with _disable_current_modes():  # the tracker does not see host memory
            host = t.detach().clone()
        nbytes = host.untyped_storage().nbytes()
        self.live += nbytes
        self.peak = max(self.peak, self.live)
        weakref.finalize(host.untyped_storage(), self._free, nbytes).atexit = False
        return host

    def _free(self, nbytes: int) -> None:
        self.live -= nbytes

    @staticmethod
    def _unpack(host: torch.Tensor) -> torch.Tensor:
        return host.clone()


def _phase(tracker, name):
    if tracker is not None:
        tracker.phase(name)


def _timed(device: torch.device, fn) -> dict:
    """Run `fn`; its seconds, and on CUDA the allocator's peak during it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return {"step_s": time.perf_counter() - t0, "max_memory_allocated": torch.cuda.max_memory_allocated(device)}
    return {"step_s": time.perf_counter() - t0}


class _GenerationPhases:
    """Prefill, then decode steps: the first, the last, the ones between."""

    def __init__(self, model, tracker: LiveBytes, new_tokens: int):
        self.tracker, self.calls, self.new_tokens = tracker, 0, new_tokens
        self.handle = _llava(model).register_forward_pre_hook(self)

    def __call__(self, module, args):
        self.calls += 1
        last = self.new_tokens
        self.tracker.phase("prefill" if self.calls == 1 else "decode.first" if self.calls == 2
                           else "decode.last" if self.calls == last else "decode.middle")


def generate(model, shape: ModelShape, w: Workload, rows: int, device: torch.device):
    """The evaluation's batched greedy decoding: `rows` prompts of `w.length` tokens, each with
    an image, `w.new_tokens` new tokens each (no early stop: the stop id is out of vocabulary)."""
    batch = make_batch(shape, rows, w.length)
    vision_dtype = next(_llava(model).model.vision_tower.parameters()).dtype
    prompts = [{"input_ids": batch["input_ids"][i].tolist(),
                "pixel_values": batch["pixel_values"][i:i + 1].to(vision_dtype)} for i in range(rows)]
    llava = _llava(model)
    llava.generation_config.eos_token_id = None
    tokenizer = SimpleNamespace(pad_token_id=0, eos_token_id=shape.vocab_size)  # never generated
    text = shape.text
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    kv = (getattr(text, "num_key_value_heads", None) or text.num_attention_heads, head_dim)
    tracker, params = _tracker(model, shape, device, kv_shape=kv)
    phases = _GenerationPhases(model, tracker, w.new_tokens)
    out = []

    def run(tracker=None):
        with fp32_compute(device), tracker or contextlib.nullcontext(), torch.no_grad(), \
                torch.profiler.record_function(STEP_EVENT):
            out[:] = generate_tokens(model, tokenizer, prompts, batch_size=rows, max_new_tokens=w.new_tokens)

    try:
        stats = _timed(device, lambda: run(tracker))
    finally:
        phases.handle.remove()
    if device.type == "cuda":
        stats["step_s"] = _timed(device, run)["step_s"]
    if any(len(o) != w.new_tokens for o in out):
        raise RuntimeError(f"generation stopped early: {[len(o) for o in out]} tokens, expected {w.new_tokens}")
    return tracker.finish(), params, stats


@contextlib.contextmanager
def quiet_warnings():
    """Silence what the planning runs would repeat at every depth (paged optimizers fall back
    on the CPU; transformers' deprecation and use_cache notes)."""
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Paged optimizers are not supported on CPU.*")
            warnings.filterwarnings("ignore", category=FutureWarning)
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
