"""From peaks measured at 1, 2, 4 decoder layers to a prediction at full depth and any size.

Each phase's peak, category by category, is fitted as a straight line over depth (each layer
adds the same weights, adapter, gradients, optimizer state and checkpoint), then evaluated at
the model's depth; the step's peak is the largest phase. Bytes that belong to the model
(weights, adapters, gradients, optimizer state) do not depend on the batch; bytes that belong
to the data (activations, logits, KV cache, inputs) are scaled with the number of tokens
(micro-batch × length) — so one measured micro-batch predicts the others; with a chunked loss
(`model.loss_chunk_tokens`) the logits are one chunk's, so they grow with the labelled tokens
only until those fill a chunk. Generation adds the
decode steps: the last step's peak grows linearly with the tokens generated so far.

What a card needs is a PREDICTION: the tracked peak (what `torch.cuda.max_memory_allocated`
reports) plus an assumed allocator slack (cached-but-free blocks) and the CUDA context, which
no tensor accounts for, plus optimizer state that bitsandbytes pages outside the allocator.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from lora_vl.plan.step import Measured
from lora_vl.plan.tracker import ACTIVATIONS, DEQUANT, KV_CACHE, LOGITS, OPTIM_PAGED

GIB = 2 ** 30
DATA = {ACTIVATIONS, LOGITS, KV_CACHE, "inputs"}  # scale with tokens; everything else is the model's
NOT_FITTED = {"backward.middle", "decode.middle"}  # bounded by the phases around them (linear in depth)
STAND_IN = {"backward.bottom": "backward.top"}  # one layer is both the top and the bottom one


@dataclass
class Overhead:
    """What a card needs beyond the tracked tensors (assumed, not measured)."""
    context_gib: float = 0.75  # CUDA context + kernels of torch, cuBLAS, bitsandbytes
    slack: float = 0.10  # allocator: reserved-but-free blocks and fragmentation, as a share of the peak

    def describe(self) -> str:
        return (f"assumed: CUDA context {self.context_gib:.2f} GiB + allocator slack "
                f"{self.slack:.0%} of the tracked peak")


@dataclass
class Prediction:
    phase: str
    breakdown: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.breakdown.values())

    @property
    def allocator(self) -> int:
        """Comparable with torch.cuda.max_memory_allocated (paged states are managed memory)."""
        return self.total - self.breakdown.get(OPTIM_PAGED, 0)

    def card_bytes(self, overhead: Overhead) -> float:
        return (self.allocator * (1 + overhead.slack) + self.breakdown.get(OPTIM_PAGED, 0)
                + overhead.context_gib * GIB)


def line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares (intercept, slope)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
    return my - slope * mx, slope


@dataclass
class DepthFit:
    """Per phase and category: bytes = a + b · layers, from the measured runs."""
    runs: list[Measured]
    new_tokens: int = 0  # generation: tokens generated in the measured runs
    lines: dict[str, dict[str, tuple[float, float]]] = field(init=False)

    def __post_init__(self):
        if len({r.layers for r in self.runs}) < 2:
            raise ValueError("a depth fit needs runs at two or more depths")
        self.lines = {}
        names = {p for r in self.runs for p in r.phases} - NOT_FITTED
        for phase in sorted(names):
            rows = [(r.layers, self._breakdown(r, phase)) for r in self.fitted_runs]
            rows = [(n, b) for n, b in rows if b is not None]
            if len({n for n, _ in rows}) < 2:
                continue
            cats = {c for _, b in rows for c in b}
            self.lines[phase] = {c: line([n for n, _ in rows], [b.get(c, 0) for _, b in rows]) for c in cats}

    @property
    def fitted_runs(self) -> list[Measured]:
        """The runs on the line: with two or more depths of 2+ layers, the 1-layer run is left
        out — its only layer is also the bottom one, whose input needs no gradient, so its
        backward is not that of a middle layer (the runs at 2+ layers lie on a line)."""
        deep = [r for r in self.runs if r.layers >= 2]
        return deep if len({r.layers for r in deep}) >= 2 else self.runs

    @staticmethod
    def _breakdown(run: Measured, phase: str) -> dict[str, int] | None:
        p = run.phases.get(phase) or run.phases.get(STAND_IN.get(phase, ""))
        return p.breakdown if p is not None else None

    def scale(self, cat: str, token_scale: float) -> float:
        """How a category's measured bytes grow when the tokens grow by `token_scale`."""
        if cat not in DATA:
            return 1.0
        run = self.runs[0]
        chunk, labelled = run.stats.get("loss_chunk", 0), run.stats.get("labelled_tokens", 0)
        if cat == LOGITS and chunk and labelled:  # one chunk of min(chunk, labelled) rows at a time
            return min(chunk, labelled * token_scale) / min(chunk, labelled)
        return token_scale

    def phase_at(self, phase: str, layers: int, token_scale: float = 1.0) -> dict[str, int]:
        out = {}
        for cat, (a, b) in self.lines[phase].items():
            out[cat] = max(0, round((a + b * layers) * self.scale(cat, token_scale)))
        return out

    def predict(self, layers: int, token_scale: float = 1.0, new_tokens: int | None = None) -> Prediction:
        """The largest phase at `layers`, with data bytes scaled by `token_scale` and (generation)
        the last decode step moved to `new_tokens`."""
        best = None
        for phase in self.lines:
            b = self.phase_at(phase, layers, token_scale)
            if phase == "decode.last" and new_tokens and "decode.first" in self.lines:
                b = self.decode_step(layers, token_scale, new_tokens)
            if best is None or sum(b.values()) > best.total:
                best = Prediction(phase, b)
        return best

    def decode_step(self, layers: int, token_scale: float, new_tokens: int) -> dict[str, int]:
        """Peak of the last decode step of a `new_tokens` answer: linear between the first and
        the last measured step (forward calls 2 and `self.new_tokens`)."""
        first = self.phase_at("decode.first", layers, token_scale)
        last = self.phase_at("decode.last", layers, token_scale)
        k = (new_tokens - 2) / max(self.new_tokens - 2, 1)
        return {c: max(0, round(first.get(c, 0) + (last.get(c, 0) - first.get(c, 0)) * k))
                for c in set(first) | set(last)}

    def residual(self) -> float:
        """Largest |fit - measured| / measured of the total peak over the fitted runs."""
        worst = 0.0
        for r in self.fitted_runs:
            fitted = self.predict(r.layers, 1.0).total
            worst = max(worst, abs(fitted - r.peak) / r.peak)
        return worst


def largest_micro_batch(fit: DepthFit, layers: int, measured_tokens: int, length: int, card_gib: float,
                        overhead: Overhead, rows_per_sample: int = 1, limit: int = 256,
                        new_tokens: int | None = None) -> int:
    """Largest power-of-two micro-batch at `length` whose predicted need fits `card_gib` (0: none)."""
    best, b = 0, 1
    while b <= limit:
        scale = b * rows_per_sample * length / measured_tokens
        if fit.predict(layers, scale, new_tokens).card_bytes(overhead) > card_gib * GIB:
            break
        best, b = b, b * 2
    return best


def transient_note(pred: Prediction) -> str | None:
    """A line on the dequantization temporary when it is part of the peak."""
    if pred.breakdown.get(DEQUANT):
        return "the peak includes one dequantized 4-bit weight (bitsandbytes' unfused 4-bit matmul)"
    return None
