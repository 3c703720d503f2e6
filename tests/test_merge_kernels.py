"""The compiled loops of the dense merges (lora_vl/merge/kernels.py) against their definitions."""
import pytest
import torch

from lora_vl.merge import kernels


@pytest.fixture(params=[1, 2], ids=["1-thread", "2-threads"])
def threads(request):
    """The loops split their work by torch's thread count: chunk edges move with it."""
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


def awkward_values(n: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """Many equal magnitudes of both signs, zeros of both signs, values one ulp apart (they share
    every bit but the last, so only the last digit pass tells them apart) and an infinity."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(-12, 13, (n,), generator=g).to(dtype) / 8
    near = torch.full((n // 4,), 1.5, dtype=dtype)
    for i in range(1, near.numel()):
        near[i] = torch.nextafter(near[i - 1], torch.tensor(2.0, dtype=dtype))
    x[: near.numel()] = near * torch.where(torch.rand(near.numel(), generator=g) < 0.5, -1.0, 1.0).to(dtype)
    x[-3:] = torch.tensor([-0.0, 0.0, float("-inf")], dtype=dtype)
    return x[torch.randperm(n, generator=g)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kth_largest_magnitude_equals_the_sorted_definition(threads, dtype):
    x = awkward_values(30_011, dtype, seed=threads)
    ordered = x.abs().sort(descending=True).values
    for k in (1, 2, 3, 100, 7_500, 7_503, 15_005, 29_000, 30_010, 30_011):
        assert kernels.kth_largest_magnitude(x, k) == ordered[k - 1].item(), k


def test_kth_largest_magnitude_names_what_it_cannot_do():
    with pytest.raises(TypeError, match="float32 or float64 expected, got bfloat16"):
        kernels.kth_largest_magnitude(torch.ones(4, dtype=torch.bfloat16), 1)
    with pytest.raises(ValueError, match="k=5 outside 1..4"):
        kernels.kth_largest_magnitude(torch.ones(4), 5)


def definition(deltas, cuts, weights):
    """TIES as torch ops on whole tensors, in the kernel's order: each delta trimmed at its cut and
    weighted, the sign of the sum elected, the mean over the non-zero entries of that sign."""
    kept = [d * torch.where(d.abs() >= c, torch.tensor(w, dtype=d.dtype), torch.tensor(0.0, dtype=d.dtype))
            for d, c, w in zip(deltas, cuts, weights)]
    total = kept[0].clone()
    for t in kept[1:]:
        total = total + t
    sign = torch.sign(total)
    acc = torch.zeros_like(total)
    count = torch.zeros_like(total)
    for i, t in enumerate(kept):
        agree = (t * sign > 0).to(t.dtype)
        acc = t * agree if i == 0 else acc + t * agree
        count = count + agree
    return acc / count.clamp(min=1)


@pytest.mark.parametrize("dtype,inputs", [(torch.float32, 1), (torch.float32, 2), (torch.float32, 3),
                                          (torch.float64, 2)])
def test_trim_elect_mean_equals_the_definition_exactly(threads, dtype, inputs):
    n = 5 * kernels.BLOCK + 123  # several sub-blocks per thread and partial ones at every edge
    deltas = [awkward_values(n, dtype, seed=i) * (1 + i) for i in range(inputs)]
    deltas = [d.clamp(-1e6, 1e6) for d in deltas]  # finite: inf - inf has no sign to elect
    cuts = [kernels.kth_largest_magnitude(d, max(1, int(0.4 * n))) for d in deltas]
    cuts[0] = 0.0 if inputs == 3 else cuts[0]  # a cut of 0 keeps every entry (DARE-TIES, DELLA)
    weights = [1.0, -0.7, 0.35][:inputs]
    expected = definition(deltas, cuts, weights)
    out = kernels.trim_elect_mean_([d.clone() for d in deltas], cuts, weights)
    assert torch.equal(out, expected)
    assert (expected == 0).any() and (expected != 0).any()


def test_trim_elect_mean_names_inputs_it_cannot_take():
    a = torch.ones(4, 6)
    for other in (torch.ones(4, 6, dtype=torch.float64), torch.ones(6, 4), torch.ones(6, 4).T):
        with pytest.raises(TypeError, match=r"contiguous float32/float64 deltas of one shape and dtype"):
            kernels.trim_elect_mean_([a.clone(), other], [0.0, 0.0], [1.0, 1.0])


def test_sum_of_squares_accumulates_in_float64(threads):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3 * kernels.BLOCK + 7, generator=g) * 1e3
    x[0] = 3e18  # its square exceeds float32's range; float64 holds it
    assert kernels.sum_of_squares(x) == pytest.approx(float((x.double() ** 2).sum()), rel=1e-13)
