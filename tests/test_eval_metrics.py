"""Confidence intervals, agreement and answer scoring on fixed inputs."""
import math

import pytest

from lora_vl.evaluation.items import EvalItem
from lora_vl.evaluation.metrics import agreement, bootstrap, cohen_kappa, mme_score, rate, wilson
from lora_vl.evaluation.scoring import extract_letter, extract_yes_no, score_item


def test_wilson_hand_computed():
    # k=8, n=10, z=1.96: center=(0.8+1.9208/10)/1.38416=0.71674, half=1.96*sqrt(0.016+0.009604)/1.38416
    lo, hi = wilson(8, 10, z=1.96)
    assert lo == pytest.approx(0.49016, abs=1e-4) and hi == pytest.approx(0.94332, abs=1e-4)
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0
    assert all(math.isnan(x) for x in wilson(0, 0))


def test_rate_counts_unparsed_apart():
    r = rate([True, False, None, True], metric="asr", judge="j")
    assert (r["k"], r["n"], r["unparsed"], r["value"]) == (2, 3, 1, pytest.approx(2 / 3))
    assert r["ci"] == list(wilson(2, 3)) and r["judge"] == "j"


def test_kappa_and_agreement():
    a = [True, True, False, False, True, False]
    b = [True, False, False, False, True, True]
    # po = 4/6; pa = pb = 1/2 -> pe = 1/2; kappa = (2/3 - 1/2) / (1/2) = 1/3
    assert cohen_kappa(a, b) == pytest.approx(1 / 3)
    ag = agreement(a + [None], b + [True])
    assert ag["n"] == 6 and ag["agreement"] == pytest.approx(4 / 6) and ag["kappa"] == pytest.approx(1 / 3)
    assert cohen_kappa([True, True], [True, True]) is None


def test_bootstrap_brackets_the_mean():
    vals = [0, 1] * 50
    lo, hi = bootstrap(vals, lambda s: sum(s) / len(s), 500, seed=0)
    assert lo < 0.5 < hi and hi - lo < 0.3
    assert bootstrap(vals, lambda s: sum(s) / len(s), 500, seed=0) == (lo, hi)


def test_mme_score():
    rows = [("color", "img1", True), ("color", "img1", True), ("color", "img2", True), ("color", "img2", False),
            ("count", "img3", False), ("count", "img3", False)]
    # color: acc 3/4, acc+ 1/2 -> 125; count: 0 -> total 125
    assert mme_score(rows) == pytest.approx(125.0)


@pytest.mark.parametrize("answer,expected", [
    ("B", "B"), ("B.", "B"), ("(C) green", "C"), ("The answer is A.", "A"), ("blue", "B"),
    ("I think it's purple", None), ("A or B", "A"), ("", None),
])
def test_extract_letter(answer, expected):
    assert extract_letter(answer, ["red", "blue", "green"]) == expected


def test_yes_no_and_score_item():
    assert extract_yes_no("Yes, it is.") == "yes" and extract_yes_no("Nope") is None
    mc = EvalItem(id="1", prompt="", benchmark="m", category="c", reference="B", choices=["x", "y"])
    assert score_item(mc, "B") == (True, True) and score_item(mc, "zzz") == (False, False)
    yn = EvalItem(id="2", prompt="", benchmark="m", category="c", reference="no")
    assert score_item(yn, "No.") == (True, True)
