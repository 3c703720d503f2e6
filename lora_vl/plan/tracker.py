"""Peak of live tensor bytes over a piece of real work, by category, with no GPU.

Tensor sizes do not depend on the device: the bytes a training step keeps alive on a GPU are the
bytes it keeps alive on a CPU with the same dtypes, shapes, quantization and checkpointing. This
`TorchDispatchMode` sees every tensor an operator returns (forward, autograd's backward,
recomputation, optimizer), counts each storage once (views share it) from its creation until
its last reference dies (a weakref finalizer on the storage), and records the peak total — per
phase, with a breakdown by category taken at the moment of the peak.

What it counts like `torch.cuda.max_memory_allocated`: sizes rounded up to the CUDA caching
allocator's 512-byte blocks; bitsandbytes' `gemm_4bit`, which on a GPU dequantizes the weight
into a temporary inside the operator (invisible to a dispatch mode), is charged that temporary
while it runs. What it cannot see: other scratch buffers allocated inside kernels (cuBLAS
workspaces, attention kernel workspaces) — small next to the step, and covered by the stated
overhead in `fit.py`.
"""
from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

BLOCK = 512  # CUDA caching allocator rounds every allocation up to a multiple of 512 bytes
GEMM_4BIT_FUSED_MAX_M = 4  # bitsandbytes' fused 4-bit kernel (no temporary) only for a few rows

ACTIVATIONS = "activations"
LOGITS = "logits & loss"
KV_CACHE = "KV cache"
GRADS = "gradients"
OPTIM = "optimizer state"
OPTIM_PAGED = "optimizer state (paged)"
DEQUANT = "dequantized weight (transient)"
WEIGHT_COPY = "weight copies (bf16 casts)"
OPTIM_TEMP = "optimizer step temporaries"

# Ops CUDA autocast runs in fp32 that CPU autocast leaves alone. If one of them meets a bf16
# input here, the CPU step keeps a smaller tensor than the GPU step would: reported, not hidden.
CUDA_FP32_OPS = {"_softmax", "_log_softmax", "native_layer_norm", "native_group_norm", "exp", "log", "pow",
                 "rsqrt", "reciprocal", "sum", "cumsum", "prod", "logsumexp", "nll_loss_forward",
                 "nll_loss2d_forward", "mse_loss", "softplus", "linalg_vector_norm", "norm", "erfinv",
                 "log1p", "expm1", "binary_cross_entropy_with_logits", "l1_loss", "smooth_l1_loss", "kl_div"}


def rounded(nbytes: int) -> int:
    return int(math.ceil(nbytes / BLOCK) * BLOCK)


@dataclass
class PhasePeak:
    bytes: int = 0
    breakdown: dict[str, int] = field(default_factory=dict)


class LiveBytes(TorchDispatchMode):
    """Track live storages on `device_type`; `phase(name)` starts a new phase.

    `add_known` labels storages that exist before tracking (weights, optimizer state, inputs);
    new storages are labelled when the breakdown is taken: a parameter's `.grad` → gradients, an
    optimizer state tensor → optimizer state; else by how they were made: a dtype copy of a
    parameter → weight copies, anything the optimizer phase makes → optimizer temporaries; else
    by shape (last dim = vocabulary → logits & loss; a key/value cache shape in generation → KV
    cache); else activations.
    """

    def __init__(self, device_type: str, *, vocab_size: int, params=(), optimizer=None,
                 paged_min_numel: int | None = None, kv_shape: tuple[int, int] | None = None):
        super().__init__()
        self.device_type = device_type
        self.vocab_size = vocab_size
        self.params = [p for p in params if p.requires_grad]
        self.optimizer = optimizer
        self.paged_min_numel = paged_min_numel  # bitsandbytes pages states of params this large
        self.kv_shape = kv_shape  # (kv heads, head dim) when decoding with a cache
        self.live: dict[int, list] = {}  # storage id -> [bytes, label at creation]
        self._finalizers: list[weakref.finalize] = []
        self.autocast_gaps: set[str] = set()  # ops CUDA autocast would have run in fp32
        self.total = 0
        self.phases: dict[str, PhasePeak] = {}
        self._phase = None
        self._at_peak = False
        self.phase("start")

    # --- bookkeeping ---------------------------------------------------------------------
    def add_known(self, tensors, category: str) -> None:
        for t in tensors:
            if isinstance(t, torch.Tensor):
                self._track(t, category)

    def _track(self, t: torch.Tensor, label: str | None = None) -> None:
        if t.device.type != self.device_type or t.is_meta:
            return
        st = t.untyped_storage()
        key = st._cdata
        nbytes = rounded(st.nbytes())
        if key in self.live:
            entry = self.live[key]
            if entry[0] != nbytes:  # a storage resized in place
                self._grow(nbytes - entry[0])
                entry[0] = nbytes
            return
        if nbytes == 0:
            return
        self.live[key] = [nbytes, label or self._label(t)]
        f = weakref.finalize(st, self._free, key)
        f.atexit = False
        self._finalizers.append(f)
        self._grow(nbytes)

    def _label(self, t: torch.Tensor) -> str:
        if t.dim() and t.shape[-1] == self.vocab_size:
            return LOGITS
        if self.kv_shape and t.dim() == 4 and (t.shape[1], t.shape[3]) == self.kv_shape:
            return KV_CACHE
        return ACTIVATIONS

    def _grow(self, nbytes: int) -> None:
        self.total += nbytes
        peak = self.phases[self._phase]
        if self.total > peak.bytes:
            peak.bytes = self.total
            self._at_peak = True

    def _free(self, key: int) -> None:
        entry = self.live.get(key)
        if entry is None:
            return
        if self._at_peak:  # the first free after a new peak: the peak's contents are still live
            self._snapshot()
        del self.live[key]
        self.total -= entry[0]

    def _snapshot(self) -> None:
        self._at_peak = False
        grads = {p.grad.untyped_storage()._cdata for p in self.params if p.grad is not None}
        opt, paged = self._optimizer_storages()
        out: dict[str, int] = {}
        for key, (nbytes, label) in list(self.live.items()):  # a finalizer may run meanwhile
            cat = GRADS if key in grads else OPTIM_PAGED if key in paged else OPTIM if key in opt else label
            out[cat] = out.get(cat, 0) + nbytes
        self.phases[self._phase].breakdown = out

    def _optimizer_storages(self) -> tuple[set[int], set[int]]:
        opt, paged = set(), set()
        if self.optimizer is None:
            return opt, paged
        for p, state in self.optimizer.state.items():
            for v in state.values():
                if isinstance(v, torch.Tensor) and v.device.type == self.device_type:
                    key = v.untyped_storage()._cdata
                    pageable = self.paged_min_numel is not None and p.numel() >= self.paged_min_numel
                    (paged if pageable and v.numel() == p.numel() else opt).add(key)
        return opt, paged

    def phase(self, name: str) -> None:
        """End the current phase and enter `name`; a phase entered again (each middle layer,
        DPO's two passes) keeps the largest peak of its visits."""
        if self._phase is not None and self._at_peak:
            self._snapshot()
        self._phase = name
        known = self.phases.get(name)
        if known is None or self.total > known.bytes:
            self.phases[name] = PhasePeak(self.total)
            self._at_peak = True

    def finish(self) -> dict[str, PhasePeak]:
        """The phases' peaks; the tracker lets go of everything it watched. Its finalizers (held
        by weakref's global registry) would keep it alive, and through `params` / `optimizer` the
        trained weights and optimizer they watch: a leak that kept each measured depth's LoRA
        and projector copies on the GPU (0.27 GiB at the 7B's 1 and 2 layers, seen in an H200
        allocator trace) through the plan's later measurements."""
        if self._at_peak:
            self._snapshot()
        for f in self._finalizers:
            f.detach()
        self._finalizers.clear()
        self.params, self.optimizer = [], None
        return self.phases

    # --- the dispatch hook ---------------------------------------------------------------
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if torch.is_autocast_enabled(self.device_type) and self.device_type != "cuda":
            self._check_autocast(func, args)
        temp = self._dequant_temporary(func, args)
        if temp:
            self._grow(temp)
        out = func(*args, **kwargs)
        label = self._op_label(func, args)
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._track(t, label)
        if temp:
            if self._at_peak:
                self._snapshot_with(DEQUANT, temp)
            self.total -= temp
        return out

    def _op_label(self, func, args) -> str | None:
        """Model-sized tensors made during the step: autocast's (and the loop's) dtype copies of
        parameters, and what the optimizer step allocates. None: label by shape."""
        if func is torch.ops.aten._to_copy.default and isinstance(args[0], torch.nn.Parameter):
            return WEIGHT_COPY
        if self._phase == "optimizer":
            return OPTIM_TEMP
        return None

    def _check_autocast(self, func, args) -> None:
        name = func.__name__.split(".")[0]
        if name in CUDA_FP32_OPS and any(isinstance(a, torch.Tensor) and a.dtype == torch.bfloat16
                                         for a in tree_flatten(args)[0]):
            self.autocast_gaps.add(name)

    def _snapshot_with(self, category: str, nbytes: int) -> None:
        self._snapshot()
        b = self.phases[self._phase].breakdown
        b[category] = b.get(category, 0) + nbytes

    def _dequant_temporary(self, func, args) -> int:
        """Bytes of the dequantized weight `bitsandbytes::gemm_4bit` holds inside the op on a GPU
        (its unfused path; the fused kernel serves only a few rows)."""
        if getattr(func, "namespace", None) != "bitsandbytes" or "gemm_4bit" not in func.__name__:
            return 0
        a, shape_b = args[0], args[2]
        rows = a.numel() // a.shape[-1]
        if rows <= GEMM_4BIT_FUSED_MAX_M:
            return 0
        return rounded(math.prod(shape_b) * a.element_size())
