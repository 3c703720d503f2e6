"""The evaluation registries (judges, benchmark readers) are the one list: every registered name is
accepted by the suite schema and listed in `lora-vl eval --help`; unknown names are refused with
the registered ones; adding a judge is one decorated class."""
import typing

import pytest

from lora_vl.cli import main as lora_vl
from lora_vl.evaluation.judges import build_judge
from lora_vl.evaluation.judges.base import Judge, Verdict
from lora_vl.evaluation.judges.registry import JUDGES, judge
from lora_vl.evaluation.readers.registry import READERS
from lora_vl.evaluation.suite import Category, Suite
from lora_vl.recipe import RecipeError, build


def suite(judges=(), benchmarks=()):
    return build(Suite, {"name": "t", "judges": list(judges), "benchmarks": list(benchmarks)}, "suite.yaml")


@pytest.fixture(scope="module")
def eval_help():
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        lora_vl(["eval", "--help"])
    return " ".join(out.getvalue().split())  # argparse wraps nothing here, but be safe on spaces


def test_every_judge_is_accepted_and_listed(eval_help):
    assert {"refusal", "llama_guard", "wildguard", "harmbench", "sorry_bench", "toy_oracle"} <= set(JUDGES)
    for name, kind in JUDGES.items():
        s = suite(judges=[{"name": "j", "kind": name, "variant": kind.variants[0] if kind.variants else None}])
        assert s.judges[0].kind == name
        assert f"{name} (" in eval_help
        for v in kind.variants:
            assert v in eval_help


def test_every_reader_is_accepted_and_listed(eval_help):
    categories = set(typing.get_args(Category))
    for name, reader in READERS.items():
        s = suite(benchmarks=[{"name": "b", "reader": name, "source": "x"}])
        assert s.benchmarks[0].reader == name and f"{name} (" in eval_help
        assert reader.category in categories and set(reader.subset_categories.values()) <= categories


def test_unknown_names_list_the_registry():
    with pytest.raises(RecipeError, match=r"suite.yaml.judges\[0\].kind: unknown judge 'llamaguard'; expected one of "
                                          r"\['harmbench', 'llama_guard'"):
        suite(judges=[{"name": "j", "kind": "llamaguard"}])
    with pytest.raises(RecipeError, match=r"variant: 'xl' is not a variant of judge 'llama_guard'; expected one of "
                                          r"\['8b', '1b', 'vision'\]"):
        suite(judges=[{"name": "j", "kind": "llama_guard", "variant": "xl"}])
    with pytest.raises(RecipeError, match="'8b' is not a variant of judge 'wildguard'; expected none"):
        suite(judges=[{"name": "j", "kind": "wildguard", "variant": "8b"}])
    with pytest.raises(RecipeError, match=r"benchmarks\[0\].reader: unknown 'xs_test' "
                                          r"\(not a benchmark reader\); expected one of \['advbench'"):
        suite(benchmarks=[{"name": "b", "reader": "xs_test", "source": "x"}])


def test_adding_a_judge_is_one_decorated_class():
    try:
        @judge("always_safe", help="says every answer is safe", variants=("strict", "lax"))
        class AlwaysSafe(Judge):
            def judge(self, items, responses):
                return [Verdict(judge=self.name, unsafe=False) for _ in responses]

        s = suite(judges=[{"name": "a", "kind": "always_safe", "variant": "lax"}])
        assert build_judge(s.judges[0]).judge([], ["x"])[0].unsafe is False
        with pytest.raises(ValueError, match="registered twice"):
            judge("always_safe", help="again")(AlwaysSafe)
    finally:
        JUDGES.pop("always_safe", None)
