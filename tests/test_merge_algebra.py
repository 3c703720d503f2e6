"""Exact sums and factor-space SVD compression against dense references."""
import pytest
import torch

from lora_vl.merge.algebra import compress, weighted_sum
from lora_vl.merge.io import LoraFactors
from lora_vl.merge.schedule import coefficient, parse_layers


def rand_factors(d_out, d_in, r, scale, seed):
    g = torch.Generator().manual_seed(seed)
    return LoraFactors(torch.randn(r, d_in, generator=g), torch.randn(d_out, r, generator=g), scale)


@pytest.mark.parametrize("shape", [(24, 40), (64, 16)])
def test_weighted_sum_equals_dense_sum_any_real_weights(shape):
    torch.manual_seed(0)
    fs = [rand_factors(*shape, r, s, seed) for seed, (r, s) in enumerate([(4, 2.0), (7, 0.5), (2, 1 / 2 ** 0.5)])]
    lams = [1.0, -0.75, 2.5]
    out = weighted_sum(list(zip(lams, fs)))
    ref = sum(lam * f.delta() for lam, f in zip(lams, fs))
    assert out.rank == 13 and out.scale == 1.0
    torch.testing.assert_close(out.delta(), ref, rtol=1e-5, atol=1e-5)


def test_weighted_sum_drops_zero_terms_and_all_zero_is_none():
    fs = [rand_factors(8, 8, 3, 1.0, 0), rand_factors(8, 8, 5, 1.0, 1)]
    assert weighted_sum([(0.0, fs[0]), (1.0, fs[1])]).rank == 5
    assert weighted_sum([(0.0, f) for f in fs]) is None


def test_peft_linear_style_mixing_is_not_the_sum():
    """Why concatenation: mixing A's and B's separately (PEFT 'linear') adds cross terms."""
    f1, f2 = rand_factors(8, 8, 3, 1.0, 0), rand_factors(8, 8, 3, 1.0, 1)
    mixed = (0.5 * f1.B + 0.5 * f2.B).double() @ (0.5 * f1.A + 0.5 * f2.A).double()
    exact = weighted_sum([(0.5, f1), (0.5, f2)]).delta()
    assert not torch.allclose(mixed, exact, atol=1e-3)


def test_compress_full_rank_is_exact_and_truncation_is_optimal():
    f = weighted_sum([(1.0, rand_factors(48, 32, 6, 2.0, 0)), (-1.0, rand_factors(48, 32, 5, 0.5, 1))])
    full, stats = compress(f, 11)
    torch.testing.assert_close(full.delta(), f.delta(), rtol=1e-4, atol=1e-4)
    assert stats.rel_error < 1e-5 and stats.kept_energy == pytest.approx(1.0)

    dense = f.delta()
    U, S, Vh = torch.linalg.svd(dense)
    ref = U[:, :4] @ torch.diag(S[:4]) @ Vh[:4]
    small, stats = compress(f, 4)
    assert small.rank == 4
    torch.testing.assert_close(small.delta(), ref, rtol=1e-4, atol=1e-4)
    true_err = (torch.linalg.norm(dense - small.delta()) / torch.linalg.norm(dense)).item()
    assert stats.rel_error == pytest.approx(true_err, rel=1e-4)
    assert stats.kept_energy == pytest.approx(float((S[:4] ** 2).sum() / (S ** 2).sum()), rel=1e-5)


def test_schedule_layers_ramp_and_module_weights():
    q3, mlp10 = "model.layers.3.self_attn.q_proj", "model.layers.10.mlp.up_proj"
    assert parse_layers("8-10,2", "x") == [2, 8, 9, 10]
    layers = parse_layers("8-16", "x")
    assert coefficient(q3, 1.0, layers) == 0.0
    assert coefficient(mlp10, 2.0, layers) == 2.0
    assert coefficient(mlp10, 1.0, ramp=[0.0, 1.0], num_layers=21) == pytest.approx(0.5)
    assert coefficient(mlp10, 1.0, layers, ramp=[1.0, 0.0]) == pytest.approx(0.75)
    assert coefficient(mlp10, 1.0, module_weights={"mlp": 0.5, "up": 0.5}) == pytest.approx(0.25)
    assert coefficient("lm_head", 0.7, layers) == 0.7
    with pytest.raises(ValueError, match="bad layer range"):
        parse_layers("8..16", "inputs[1].layers")


def test_small_lapack_calls_run_in_one_thread_and_restore_the_count():
    """`one_thread` (why: lora_vl/threads.py, erratic multi-threaded eigh) sets one thread inside
    and gives the caller's count back, also when the call inside fails."""
    from lora_vl.threads import one_thread

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with one_thread():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with pytest.raises(RuntimeError), one_thread():
            raise RuntimeError("inside")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
