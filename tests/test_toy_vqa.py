"""The open-VQA reader (lmms-lab VQAv2 / TextVQA layouts) and its exact-match scoring."""
from __future__ import annotations

import json

import pytest
from eval_helpers import spec, write_parquet

from lora_vl.evaluation.items import BenchmarkError, load_image
from lora_vl.evaluation.readers import read_benchmark, study_category
from lora_vl.evaluation.scoring import normalize_answer, score_item, scorer_name


def _png(color):
    from PIL import Image

    return Image.new("RGB", (8, 8), color)


def test_vqav2_parquet_layout(tmp_path):
    rows = [{"question_id": 7, "question": "What color is it?", "question_type": "what color",
             "answers": [{"answer": "red", "answer_confidence": "yes", "answer_id": 1},
                         {"answer": "dark red", "answer_confidence": "maybe", "answer_id": 2}],
             "multiple_choice_answer": "red", "answer_type": "other", "image_id": 1, "image": _png("red")}]
    write_parquet(tmp_path / "data" / "validation-00000-of-00001.parquet", rows)
    s = spec("vqa", tmp_path)
    (item,) = read_benchmark(s, 0)
    assert study_category(s) == "helpfulness"
    assert item.id == "7" and item.prompt == "What color is it?\nAnswer the question using a single word or phrase."
    assert item.meta["answers"] == ["red", "dark red"] and load_image(item).size == (8, 8)
    assert score_item(item, "Red.") == (True, True) and score_item(item, "the dark red") == (True, True)
    assert score_item(item, "It is red.") == (False, True) and score_item(item, " ") == (False, False)
    assert scorer_name(item) == "match:exact"


def test_textvqa_string_answers_and_text_only_rows(tmp_path):
    rows = [{"question_id": "q1", "question": "What is two plus two?", "answers": ["four", "4"]},
            {"question_id": "q2", "question": "How many?", "multiple_choice_answer": "3"}]
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    a, b = read_benchmark(spec("vqa", tmp_path), 0)
    assert not a.has_image and a.meta["answers"] == ["four", "4"] and b.meta["answers"] == ["3"]
    assert score_item(a, "4") == (True, True) and score_item(b, "Three") == (True, True)


def test_rows_without_answers_are_named(tmp_path):
    (tmp_path / "qa.jsonl").write_text(json.dumps({"question_id": 1, "question": "Why?"}) + "\n")
    with pytest.raises(BenchmarkError, match="row 0 has no 'answers' list"):
        read_benchmark(spec("vqa", tmp_path), 0)


@pytest.mark.parametrize("raw, norm", [("The Red ball.", "red ball"), ("An apple!", "apple"),
                                        ("two", "2"), ("1,000", "1000"), ("I\u2019m here", "i'm here")])
def test_normalization(raw, norm):
    assert normalize_answer(raw) == norm
