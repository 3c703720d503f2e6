"""`plan/cpu_bf16.py`: the planner's bf16 matmuls in fp32 on a CPU that emulates bf16 — the same
tensors (dtype, shape, strides, bytes) as the bf16 operators, and a whole planned step with the
same bytes in every phase and category as without it."""
from __future__ import annotations

import contextlib

import bitsandbytes.functional as bnbF
import pytest
import torch

from lora_vl.plan import cpu_bf16
from lora_vl.plan.step import measure
from tests.test_plan import CPU, workload

BF16 = torch.bfloat16


def described(out) -> list:
    outs = out if isinstance(out, tuple) else (out,)
    return [(t.dtype, tuple(t.shape), t.stride(), t.untyped_storage().nbytes()) for t in outs]


def gemm_4bit(x):
    packed, state = bnbF.quantize_4bit(x[1].float(), quant_type="nf4")
    return torch.ops.bitsandbytes.gemm_4bit(x[0], packed, [96, 64], state.absmax, state.blocksize, "nf4")


OPS = {
    "mm": lambda x: x[0] @ x[1].T,
    "addmm": lambda x: torch.addmm(x[2], x[0], x[1].T),
    "bmm": lambda x: torch.bmm(x[0].view(4, 8, 64), x[1].view(4, 64, 24)),
    "attention": lambda x: torch.nn.functional.scaled_dot_product_attention(
        *(x[0].view(1, 4, 8, 64),) * 3, is_causal=True),
    "attention, transposed layout": lambda x: torch.nn.functional.scaled_dot_product_attention(
        *(x[0].view(1, 8, 4, 64).transpose(1, 2),) * 3),
    "gemm_4bit": gemm_4bit,
}


@pytest.mark.parametrize("op", sorted(OPS))
def test_each_heavy_operator_returns_what_bf16_returns(op):
    torch.manual_seed(0)
    x = [torch.randn(32, 64, dtype=BF16), torch.randn(96, 64, dtype=BF16), torch.randn(96, dtype=BF16)]
    expected = OPS[op](x)
    with cpu_bf16.Fp32Compute():
        got = OPS[op](x)
    assert described(got) == described(expected)
    for g, e in zip(*(o if isinstance(o, tuple) else (o,) for o in (got, expected))):
        torch.testing.assert_close(g.float(), e.float(), rtol=2e-2, atol=0.1)  # bf16 rounding of ~10


def test_gradients_through_it_are_those_of_bf16():
    torch.manual_seed(0)
    q = torch.randn(1, 4, 16, 32, dtype=BF16, requires_grad=True)
    w = torch.randn(32, 32, dtype=BF16, requires_grad=True)

    def grads():
        q.grad = w.grad = None
        torch.nn.functional.scaled_dot_product_attention(q @ w, q, q, is_causal=True).float().square().sum().backward()
        return q.grad.clone(), w.grad.clone()

    expected = grads()
    with cpu_bf16.Fp32Compute():
        got = grads()
    for g, e in zip(got, expected):
        assert described(g) == described(e)
        scale = float(e.float().abs().max())  # bf16 rounding, relative to the gradient's size
        torch.testing.assert_close(g.float(), e.float(), rtol=0, atol=2e-2 * scale)


def test_in_place_and_fp32_operators_run_as_they_are():
    a, b = torch.randn(8, 8), torch.randn(8, 8, dtype=BF16)
    out = torch.empty(8, 8, dtype=BF16)
    with cpu_bf16.Fp32Compute():
        assert torch.equal(a @ a, torch.mm(a, a))  # fp32: no copy, the same operator
        torch.mm(b, b, out=out)  # writes into an argument: run as is
    assert torch.equal(out, torch.mm(b, b))


def test_it_is_used_only_where_bf16_is_emulated(monkeypatch):
    fp32, bf16 = cpu_bf16.matmul_rates(64)  # the real probe
    assert fp32 > 0 and bf16 > 0
    monkeypatch.setattr(cpu_bf16, "matmul_rates", lambda: (150e9, 0.3e9))  # AVX2: bf16 in software
    assert isinstance(cpu_bf16.for_device(CPU), cpu_bf16.Fp32Compute)
    assert isinstance(cpu_bf16.for_device(torch.device("cuda")), contextlib.nullcontext)
    monkeypatch.setattr(cpu_bf16, "matmul_rates", lambda: (100e9, 250e9))  # AMX: native bf16
    assert isinstance(cpu_bf16.for_device(CPU), contextlib.nullcontext)


@pytest.mark.parametrize("kind,kw", [
    ("stage2", {}),
    ("stage1", {}),
    ("dpo", {"loss_chunk_tokens": 32}),
    ("sft", {"frozen_dtype": "compute", "trained_dtype": "compute", "offload_checkpoints": True}),
    ("eval", {"new_tokens": 4}),
])
def test_a_planned_step_has_the_same_bytes_with_and_without_it(shape, monkeypatch, kind, kw):
    w = workload(kind, optimizer="paged_adamw_8bit", **kw)

    def run(rates):
        monkeypatch.setattr(cpu_bf16, "matmul_rates", lambda: rates)
        m = measure(shape, w, 2, 1, CPU, {})
        return ({k: (p.bytes, p.breakdown) for k, p in m.phases.items()}, m.params,
                {k: v for k, v in m.stats.items() if k not in ("step_s",)})

    native, emulated = run((1.0, 1.0)), run((150e9, 0.3e9))
    assert emulated == native
    assert max(b for b, _ in native[0].values()) > 0
