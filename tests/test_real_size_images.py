"""Every image-taking reader, fed rows at real sizes in its benchmark's own layout, loads every item.

Real benchmark images are photos of 336-1024 px: tens to hundreds of KB, so base64 text of
100k+ characters (VLMEvalKit TSVs), HF Image features of the same bytes (parquet), and files in
clones. Each test counts the rows it wrote and asserts that exactly that many items come back and
that each one's image decodes to the photo written for it — one dropped item fails it.
"""
import base64
import csv
import json
import shutil

import datasets
import pytest
from eval_helpers import FIXTURES, spec, tiny_world, write_parquet  # noqa: F401  (session fixture)

from lora_vl.evaluation import respond
from lora_vl.evaluation.items import BenchmarkError, EvalItem, load_image
from lora_vl.evaluation.readers import read_benchmark
from lora_vl.evaluation.readers.source import row_image
from lora_vl.evaluation.run import run_suite
from lora_vl.evaluation.suite import Suite
from lora_vl.recipe import build
from lora_vl.toy.photos import encoded, photo_like

# (width, height, format): from the CLIP 336 px input to a 1024 px photo, JPEG and PNG.
SHAPES = [(336, 448, "JPEG"), (512, 512, "JPEG"), (336, 336, "PNG"), (1024, 768, "JPEG")]


@pytest.fixture(scope="module")
def photos() -> list[tuple[bytes, tuple[int, int]]]:
    out = [(encoded(photo_like(w, h, seed=i), fmt), (w, h)) for i, (w, h, fmt) in enumerate(SHAPES)]
    assert max(len(base64.b64encode(b)) for b, _ in out) > 300_000  # far past any file-name limit
    return out


def read(reader, source, **kw) -> list[EvalItem]:
    return read_benchmark(spec(reader, source, **kw), seed=0)


def assert_all_load(items: list[EvalItem], sizes: list[tuple[int, int]]) -> None:
    assert len(items) == len(sizes), f"{len(sizes)} rows written, {len(items)} items read"
    assert [load_image(it).size for it in items] == sizes


def test_forty_photo_like_jpegs_as_base64_all_load():
    """The issue's check: 40 photo-like 336x448 JPEGs as base64 (Errno 36 used to drop them)."""
    items = [EvalItem(id=str(i), prompt="?", benchmark="b", category="c",
                      image=base64.b64encode(encoded(photo_like(336, 448, seed=100 + i))).decode())
             for i in range(40)]
    assert min(len(it.image) for it in items) > 20_000
    assert_all_load(items, [(336, 448)] * 40)


@pytest.mark.parametrize("value, reason", [
    ("a" * 300 + ".png", "not a usable image path"),                     # a name over 255 characters
    ("not base64 " * 1000, "neither base64 image data nor a file path"),  # 11k characters
    (base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"garbage" * 50).decode(), "image data is not a readable image"),
])
def test_unreadable_image_values_are_named_with_a_reason(value, reason):
    """No OSError from a long string reaches the user: a named BenchmarkError with a groupable reason."""
    with pytest.raises(BenchmarkError, match=r"b item 7: image .* failed to load") as e:
        load_image(EvalItem(id="7", prompt="?", benchmark="b", category="c", image=value))
    assert e.value.reason == reason


def test_an_image_url_is_named_as_a_url_not_joined_to_the_data_folder(tmp_path):
    """A row whose image is a URL (some hub exports carry them): kept as the URL by the reader's
    path resolution, refused by name at load time (nothing downloads during an evaluation)."""
    url = "https://example.org/images/cat.jpg"
    value = row_image({"image": url}, tmp_path)
    assert value == url
    with pytest.raises(BenchmarkError, match=r"b item 7: image 'https://example.org/images/cat.jpg' failed to "
                                             r"load: .* is a URL; expected a local image file") as e:
        load_image(EvalItem(id="7", prompt="?", benchmark="b", category="c", image=value))
    assert e.value.reason == "image is a URL"


def mmbench_tsv(path, photos, refs: dict[int, int]) -> list[tuple[int, int]]:
    """mmbench_dev_en.tsv as VLMEvalKit ships it; rows in `refs` carry another row's index as image."""
    rows, sizes = [], []
    for i in range(len(photos) + len(refs)):
        src = refs.get(i, i)
        image = str(src) if i in refs else base64.b64encode(photos[src][0]).decode()
        rows.append({"index": i, "question": f"Question {i}?", "hint": "" if i % 2 else "A hint.", "A": "cat",
                     "B": "dog", "C": "car", "D": "", "answer": "B", "category": "attribute_recognition",
                     "image": image, "source": "test", "l2-category": "finegrained_perception", "split": "dev"})
        sizes.append(photos[src][1] if src < len(photos) else None)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t")
        w.writeheader()
        w.writerows(rows)
    return sizes


def test_mmbench_tsv_base64_and_index_references(photos, tmp_path):
    sizes = mmbench_tsv(tmp_path / "mmbench_dev_en.tsv", photos, refs={4: 0, 5: 3, 6: 3})
    items = read("mmbench", tmp_path)
    assert_all_load(items, sizes)
    assert items[5].image == items[3].image and items[4].choices == ["cat", "dog", "car"]


def test_mmbench_reference_to_a_row_without_image_is_named(photos, tmp_path):
    mmbench_tsv(tmp_path / "mmbench_dev_en.tsv", photos, refs={4: 9})
    with pytest.raises(BenchmarkError, match=r"mmbench_dev_en.tsv line 6 \(index 4\): image '9' is a reference "
                                             r"to another row's index, but no row has that index"):
        read("mmbench", tmp_path)


def hf_image(photo: tuple[bytes, tuple[int, int]], name: str) -> dict:
    return {"bytes": photo[0], "path": name}


def test_hub_parquet_readers(photos, tmp_path):
    """lmms-lab layouts (MME, POPE, SEED-Bench, ScienceQA-IMG, VQAv2): HF Image features."""
    mme = [{"question_id": f"code/{k}.png", "image": hf_image(p, f"{k}.png"),
            "question": f"{q}? Please answer yes or no.", "answer": a, "category": "color"}
           for k, p in enumerate(photos) for q, a in (("Red", "Yes"), ("Blue", "No"))]
    assert_all_load(read("mme", write_parquet(tmp_path / "mme" / "test.parquet", mme)),
                    [p[1] for p in photos for _ in range(2)])
    pope = [{"question_id": str(k), "question": "Is there a dog in the image?", "answer": "no",
             "image_source": f"COCO_{k}", "image": hf_image(p, f"{k}.jpg"), "category": "adversarial"}
            for k, p in enumerate(photos)]
    assert_all_load(read("pope", write_parquet(tmp_path / "pope" / "test.parquet", pope)), [p[1] for p in photos])
    seed = [{"answer": "A", "choice_a": "a", "choice_b": "b", "choice_c": "c", "choice_d": "d", "data_id": f"{k}.png",
             "data_type": "image", "question": "What?", "question_id": str(k), "question_type_id": 1,
             "image": [hf_image(p, f"{k}.png")]} for k, p in enumerate(photos)]
    assert_all_load(read("seedbench", write_parquet(tmp_path / "seed" / "test.parquet", seed, image_list=True)),
                    [p[1] for p in photos])
    sqa = [{"image": hf_image(p, f"{k}.png"), "question": "Which?", "choices": ["x", "y"], "answer": 1, "hint": "",
            "subject": "natural science"} for k, p in enumerate(photos)]
    assert_all_load(read("scienceqa", write_parquet(tmp_path / "sqa" / "test.parquet", sqa)), [p[1] for p in photos])
    vqa = [{"question_id": k, "question": "What colour?", "question_type": "what color", "answer_type": "other",
            "answers": [{"answer": "red", "answer_confidence": "yes", "answer_id": 1}], "multiple_choice_answer": "red",
            "image_id": k, "image": hf_image(p, f"{k}.jpg")} for k, p in enumerate(photos)]
    assert_all_load(read("vqa", write_parquet(tmp_path / "vqa" / "validation.parquet", vqa)), [p[1] for p in photos])


def test_mossbench_hub_parquet(photos, tmp_path):
    rows = [{"pid": str(k), "question": "Describe it.", "image": f"images/{k}.png", "short description": "",
             "description": "", "decoded_image": hf_image(p, f"{k}.png"), "metadata_over": "type 1",
             "metadata_human": 0, "metadata_child": 0, "metadata_syn": 1, "metadata_ocr": 0, "metadata_harm": [7]}
            for k, p in enumerate(photos)]
    ds = datasets.Dataset.from_list(rows).cast_column("decoded_image", datasets.Image())
    (tmp_path / "hub").mkdir()
    ds.to_parquet(str(tmp_path / "hub" / "train.parquet"))
    assert_all_load(read("mossbench", tmp_path / "hub" / "train.parquet"), [p[1] for p in photos])


def photo_clone(src, dst, photos) -> dict[str, tuple[int, int]]:
    """A copy of a clone-layout fixture with every image file replaced by a real-size photo of its
    own format (suffix); path -> size written."""
    shutil.copytree(src, dst)
    written = {}
    for k, path in enumerate(sorted(p for p in dst.rglob("*") if p.suffix in (".png", ".jpg"))):
        w, h, _ = SHAPES[k % len(SHAPES)]
        path.write_bytes(encoded(photo_like(w, h, seed=k), "PNG" if path.suffix == ".png" else "JPEG"))
        written[str(path)] = (w, h)
    return written


@pytest.mark.parametrize("reader, fixture, kw, n_rows", [
    ("figstep", FIXTURES / "figstep", {}, 3),                                 # safebench.csv rows
    ("mm_safetybench", FIXTURES / "mm_safetybench", {"subset": "SD"}, 3),     # processed_questions keys
    ("siuo", FIXTURES / "siuo", {}, 2),                                       # siuo_gen.json entries
    ("vlguard", FIXTURES / "vlguard", {"subset": "safe_safes"}, 1),           # test.json safe rows
])
def test_clone_layout_readers(reader, fixture, kw, n_rows, photos, tmp_path):
    written = photo_clone(fixture, tmp_path / reader, photos)
    items = read(reader, tmp_path / reader, **kw)
    assert len(items) == n_rows
    assert_all_load(items, [written[it.image] for it in items])


def test_mossbench_clone(photos, tmp_path):
    info = tmp_path / "data" / "images_information"
    info.mkdir(parents=True)
    shutil.copy(FIXTURES.parent / "upstream" / "mossbench" / "information.head.json", info / "information.json")
    sizes = []
    for k, pid in enumerate(("1", "2", "3")):
        (tmp_path / "data" / "images").mkdir(exist_ok=True)
        (tmp_path / "data" / "images" / f"{pid}.png").write_bytes(photos[k][0])
        sizes.append(photos[k][1])
    assert_all_load(read("mossbench", tmp_path), sizes)


def test_tsv_with_index_references_evaluates_every_row(photos, tiny_world, tmp_path, monkeypatch):
    """Every row answered, and images decoded slice by slice as generation reaches them."""
    sizes = mmbench_tsv(tmp_path / "mmb" / "mmbench_dev_en.tsv", photos, refs={4: 1, 5: 2})
    events = []
    real_encode = respond.encode_item
    monkeypatch.setattr(respond, "ENCODE_AHEAD", 2)
    monkeypatch.setattr(respond, "encode_item", lambda em, it: events.append("encode") or real_encode(em, it))
    suite = build(Suite, {"name": "t", "generation": {"batch_size": 3, "max_new_tokens": 2},
                          "benchmarks": [{"name": "mmb", "reader": "mmbench", "source": str(tmp_path / "mmb")}]})
    res = run_suite(suite, str(tiny_world["llava"]), [], tmp_path / "out", device="cpu",
                    on_batch=lambda ids: events.append(f"answered {len(ids)}"))
    b = res["benchmarks"][0]
    assert (b["status"], b["n_items"], b["n_skipped"], b["metrics"][0]["n"]) == ("ok", len(sizes), 0, len(sizes))
    assert json.loads((tmp_path / "out" / "results.json").read_text())["summary"]["helpfulness"]["n"] == len(sizes)
    assert events == ["encode", "encode", "answered 2"] * 3
