"""TIES / DARE / DARE-TIES / magnitude: merged adapters equal their dense definitions."""
import zlib

import pytest
import torch

from lora_vl.merge.dense import factor_dense
from lora_vl.merge.io import read_adapter
from lora_vl.merge.recipe import MergeRecipe
from lora_vl.merge.run import run
from lora_vl.recipe import build
from merge_helpers import lora_delta, synthetic_adapter

MODS_A = {"model.layers.0.mlp.up_proj": (24, 16, 4), "model.layers.1.self_attn.q_proj": (16, 16, 4)}
MODS_B = {"model.layers.0.mlp.up_proj": (24, 16, 6), "model.layers.2.self_attn.q_proj": (16, 16, 2)}
LAMS = [1.0, 0.6]
DENSITY = 0.4
EPSILON = 0.3


def trim(t, density):  # keep the k largest |t| (reference: full sort)
    k = int(round(density * t.numel()))
    thr = t.abs().flatten().sort(descending=True).values[k - 1]
    return torch.where(t.abs() >= thr, t, 0.0)


def dare_mask_drop(t, density, seed, module, i):
    g = torch.Generator().manual_seed(zlib.crc32(f"{seed}:{module}:{i}".encode()))
    return torch.where(torch.rand(t.shape, generator=g) < density, t / density, 0.0)


def ties_mean(ts):
    stacked = torch.stack(ts)
    sign = torch.sign(stacked.sum(0))
    agree = (torch.sign(stacked) == sign) & (stacked != 0)
    return (stacked * agree).sum(0) / agree.sum(0).clamp(min=1)


def magprune(t, density, epsilon, seed, module, i):
    """DELLA's MAGPRUNE as the paper states it, row by row: the entry of magnitude rank r (0 =
    smallest of the row's n) is kept with probability density - ε/2 + ε·r/(n-1), and a kept
    entry is divided by that probability."""
    g = torch.Generator().manual_seed(zlib.crc32(f"{seed}:{module}:{i}".encode()))
    draws = torch.rand(t.shape, generator=g, dtype=torch.float64)
    out = torch.zeros(t.shape, dtype=torch.float64)
    n = t.shape[1]
    for row in range(t.shape[0]):
        for r, col in enumerate(sorted(range(n), key=lambda c: abs(float(t[row, c])))):
            p = density - epsilon / 2 + epsilon * r / (n - 1)
            if draws[row, col] < p:
                out[row, col] = float(t[row, col]) / p
    return out.float()


def reference(method, module, deltas, seed=0):
    if method == "della":
        return ties_mean([lam * magprune(d, DENSITY, EPSILON, seed, module, i)
                          for i, (lam, d) in enumerate(zip(LAMS, deltas))])
    if method == "magnitude":
        return sum(lam * trim(d, DENSITY) for lam, d in zip(LAMS, deltas))
    if method == "ties":
        return ties_mean([lam * trim(d, DENSITY) for lam, d in zip(LAMS, deltas)])
    dropped = [lam * dare_mask_drop(d, DENSITY, seed, module, i) for i, (lam, d) in enumerate(zip(LAMS, deltas))]
    return sum(dropped) if method == "dare" else ties_mean(dropped)


@pytest.fixture
def adapters(tmp_path):
    torch.manual_seed(0)
    return (synthetic_adapter(tmp_path / "a", MODS_A, seed=1, alpha=8),
            synthetic_adapter(tmp_path / "b", MODS_B, seed=2, alpha=3, use_rslora=True))


def merged_deltas(tmp_path, adapters, **kw):
    recipe = build(MergeRecipe, {"inputs": [{"path": str(p), "weight": w} for p, w in zip(adapters, LAMS)],
                                 "output": str(tmp_path / kw.pop("name", "out")), "density": DENSITY,
                                 "rank": 16, "svd": "exact", **kw})
    return read_adapter(run(recipe))


@pytest.mark.parametrize("method", ["ties", "dare", "dare_ties", "magnitude", "della"])
def test_dense_method_equals_definition(tmp_path, adapters, method):
    out = merged_deltas(tmp_path, adapters, method=method, seed=7,
                        **({"epsilon": EPSILON} if method == "della" else {}))
    for m in sorted(set(MODS_A) | set(MODS_B)):
        deltas = [lora_delta(p, m).float() if m in mods else torch.zeros(MODS_A.get(m, MODS_B.get(m))[:2])
                  for p, mods in zip(adapters, (MODS_A, MODS_B))]
        ref = reference(method, m, deltas, seed=7)
        torch.testing.assert_close(out.modules[m].delta().float(), ref, rtol=1e-4, atol=1e-4)
        assert (ref == 0).any()  # something was trimmed/dropped: the test sees the method, not a plain sum


def test_dare_reproducible_by_seed(tmp_path, adapters):
    one = merged_deltas(tmp_path, adapters, method="dare", seed=3, name="one")
    two = merged_deltas(tmp_path, adapters, method="dare", seed=3, name="two")
    other = merged_deltas(tmp_path, adapters, method="dare", seed=4, name="other")
    m = "model.layers.0.mlp.up_proj"
    torch.testing.assert_close(one.modules[m].delta(), two.modules[m].delta())
    assert not torch.allclose(one.modules[m].delta(), other.modules[m].delta())


def test_factor_dense_reports_true_error_exact_and_randomized():
    torch.manual_seed(0)
    M = torch.randn(200, 30) @ torch.randn(30, 150) + 0.01 * torch.randn(200, 150)
    for svd in ("exact", "randomized"):
        f, stats = factor_dense(M, 20, svd=svd, niter=4)
        true = (torch.linalg.norm(M.double() - f.delta()) / torch.linalg.norm(M.double())).item()
        assert f.rank == 20 and stats.rel_error == pytest.approx(true, rel=1e-3, abs=1e-6)
    full, stats = factor_dense(M, 150, svd="exact")
    torch.testing.assert_close(full.delta().float(), M, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_trim_threshold_is_exact_with_ties(dtype):
    """The partition-based threshold equals the full-sort definition, ties at the threshold kept."""
    from lora_vl.merge.dense import trim_magnitude
    g = torch.Generator().manual_seed(0)
    t = (torch.randint(-6, 7, (37, 23), generator=g).double() / 4).to(dtype)  # many equal magnitudes
    for density in (0.1, 0.5, 0.77, 1.0):
        assert torch.equal(trim_magnitude(t, density), trim(t, density))


def test_ties_block_by_block_equals_the_definition_exactly():
    """Over several blocks and a partial last one, with ties at the thresholds: the compiled
    blockwise TIES gives exactly the whole-tensor definition's values."""
    from lora_vl.merge.dense import ties
    from lora_vl.merge.kernels import BLOCK
    g = torch.Generator().manual_seed(0)
    shape = (701, 1000)
    assert shape[0] * shape[1] > 8 * BLOCK and shape[0] * shape[1] % BLOCK
    deltas = [torch.randint(-40, 41, shape, generator=g).float() / 16, torch.randn(shape, generator=g)]
    lams = [1.0, -0.7]
    ref = ties_mean([lam * trim(d, 0.3) for lam, d in zip(lams, deltas)])
    assert torch.equal(ties([d.clone() for d in deltas], lams, density=0.3), ref)


def test_factor_dense_from_the_inputs_row_spaces_reports_its_true_error():
    """Started from the LoRA inputs' A rows with merge_dense's settings (one power iteration, the
    default oversampling): the reported error is the true one and within 0.1% of the exact SVD's
    optimum on a TIES result (at 7B shapes within 1e-6 of it, docs/bench_merge.md); no power
    iteration is further off."""
    from lora_vl.merge.dense import ties
    g = torch.Generator().manual_seed(0)
    m, n = 1000, 800
    A1, A2 = torch.randn(24, n, generator=g), torch.randn(12, n, generator=g)
    B1 = torch.randn(m, 24, generator=g) * torch.logspace(0, -2, 24)
    B2 = torch.randn(m, 12, generator=g)
    M = ties([B1 @ A1, B2 @ A2], [1.0, 0.6], density=0.5)
    best = factor_dense(M, 24, svd="exact")[1].rel_error
    errors = []
    for niter in (1, 0):
        f, stats = factor_dense(M, 24, svd="randomized", niter=niter, start=torch.cat([A1, A2]).T)
        true = (torch.linalg.norm(M.double() - f.delta()) / torch.linalg.norm(M.double())).item()
        assert f.rank == 24 and stats.rel_error == pytest.approx(true, rel=1e-5)
        errors.append(stats.rel_error)
    assert best <= errors[0] <= best * 1.001 and errors[0] < errors[1]


def test_factor_dense_of_a_low_rank_delta_drops_zero_directions():
    """A delta of rank 3 asked for rank 8: three factors' worth, exact, no NaN from σ = 0."""
    g = torch.Generator().manual_seed(1)
    M = torch.randn(400, 3, generator=g) @ torch.randn(3, 300, generator=g)
    f, stats = factor_dense(M, 8, svd="randomized", niter=1, start=torch.randn(300, 4, generator=g))
    assert f.rank == 3 and torch.isfinite(f.A).all() and torch.isfinite(f.B).all()
    torch.testing.assert_close(f.delta().float(), M, rtol=1e-4, atol=1e-4)
    assert stats.rel_error < 1e-5
def test_della_drops_small_entries_more_often():
    """MAGPRUNE's point: the larger an entry, the likelier it survives (DARE: all alike)."""
    from lora_vl.merge.dense import magprune as ours

    t = torch.arange(1, 201, dtype=torch.float32).repeat(400, 1)  # every row: magnitudes 1..200
    kept = ours(t, 0.5, 0.8, torch.Generator().manual_seed(0)) != 0
    small, large = kept[:, :40].float().mean().item(), kept[:, -40:].float().mean().item()
    assert small == pytest.approx(0.5 - 0.4 + 0.8 * 19.5 / 199, abs=0.02)
    assert large == pytest.approx(0.5 + 0.4 - 0.8 * 19.5 / 199, abs=0.02)
    assert kept.float().mean().item() == pytest.approx(0.5, abs=0.01)


def test_a_method_setting_is_a_recipe_key_with_help_and_validation(capsys):
    """DELLA declares `epsilon` in its registration only: the recipe, --help and checks follow."""
    from lora_vl.cli import main
    from lora_vl.merge import methods
    from lora_vl.recipe import RecipeError

    base = {"inputs": [{"path": "a"}], "output": "o", "method": "della"}
    assert build(MergeRecipe, {**base, "epsilon": 0.2}).epsilon == 0.2
    with pytest.raises(RecipeError, match=r"recipe\.epsilon: expected 0\.0 <= value <= 1\.0, got 1\.5"):
        build(MergeRecipe, {**base, "epsilon": 1.5})
    with pytest.raises(RecipeError, match="della: keep probabilities density ± epsilon/2 must lie in"):
        build(MergeRecipe, {**base, "density": 0.9, "epsilon": 0.4})
    with pytest.raises(RecipeError, match=r"recipe\.density: expected 0\.0 < value <= 1\.0, got 0"):
        build(MergeRecipe, {**base, "method": "ties", "density": 0})
    with pytest.raises(SystemExit):
        main(["merge", "--help"])
    assert "epsilon [float] (default: 0.1): della:" in capsys.readouterr().out
    with pytest.raises(ValueError, match="declares settings \\['gamma'\\], but its function takes"):
        methods.merge_method("wrong", dense=True, help="-", settings={"gamma": methods.Setting(1.0, "-")})(
            lambda deltas, weights, gens: deltas[0])
    assert "wrong" not in methods.METHODS
