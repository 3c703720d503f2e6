"""Readers, mixtures, batching, and the bad inputs of the data and model path."""
import json
import shutil

import pytest
import torch
from PIL import Image
from transformers import AutoProcessor

from lora_vl.data.batching import collate, length_grouped_batches, padding_fraction, random_batches
from lora_vl.data.config import DataConfig, DataSource
from lora_vl.data.dataset import TrainSet, read_sources
from lora_vl.data.encode import BadRecord
from lora_vl.errors import InputError
from lora_vl.data.readers import read_hf_messages, read_llava_json
from lora_vl.models import lora as L
from lora_vl.models.load import load_vlm
from lora_vl.train.stage import finished


@pytest.fixture
def proc(tiny_bases):
    return AutoProcessor.from_pretrained(tiny_bases[("llama", "clip")])


def llava_file(tmp_path, records, images=("a.png",)):
    for name in images:
        Image.new("RGB", (20, 20), "green").save(tmp_path / name)
    path = tmp_path / "data.json"
    path.write_text(json.dumps(records))
    return path


GOOD = {"id": "r1", "image": "a.png", "conversations": [
    {"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A square."},
    {"from": "human", "value": "Color?"}, {"from": "gpt", "value": "Green."}]}
TEXT = {"id": "t1", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello."}]}


def test_llava_json_reader(tmp_path):
    samples = read_llava_json(llava_file(tmp_path, [GOOD, TEXT]))
    assert [s.id for s in samples] == ["r1", "t1"]
    assert samples[0].messages[2] == {"role": "user", "content": "Color?"}
    assert samples[0].images == [tmp_path / "a.png"] and samples[1].images == []


def test_hf_messages_reader_with_structured_content(tmp_path):
    import datasets

    ds = datasets.Dataset.from_dict({
        "messages": [[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What?"}]},
                      {"role": "assistant", "content": [{"type": "text", "text": "A dot."}]}]],
        "images": [[Image.new("RGB", (16, 16), "red")]],
    }).cast_column("images", datasets.Sequence(datasets.Image()))
    ds.save_to_disk(tmp_path / "ds")
    (s,) = read_hf_messages(str(tmp_path / "ds"))
    assert s.messages[0]["content"] == "<image>\nWhat?" and s.messages[1]["content"] == "A dot."
    assert len(s.images) == 1 and isinstance(s.images[0], Image.Image)


def test_jsonl_image_paths_are_relative_to_the_jsonl_folder(tmp_path, monkeypatch):
    """A relative image path in a JSONL file means the file's folder, wherever the command runs."""
    (tmp_path / "data").mkdir()
    Image.new("RGB", (16, 16), "red").save(tmp_path / "data/dot.png")
    row = {"messages": [{"role": "user", "content": "<image>\nWhat?"}, {"role": "assistant", "content": "A dot."}],
           "images": ["dot.png"]}
    (tmp_path / "data/chat.jsonl").write_text(json.dumps(row) + "\n")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    (s,) = read_hf_messages(str(tmp_path / "data/chat.jsonl"))
    assert s.images == [tmp_path / "data/dot.png"]


def test_text_and_image_samples_share_a_batch(tmp_path, proc):
    data = TrainSet(DataConfig(sources=[DataSource(format="llava_json", path=str(llava_file(tmp_path, [GOOD, TEXT])))]),
                    proc)
    batch = collate([data[0], data[1]], proc.tokenizer.pad_token_id)
    assert batch["pixel_values"].shape[0] == 1 and batch["input_ids"].shape[0] == 2
    assert batch["attention_mask"][1].sum() == len(data[1].input_ids)


def test_mixture_weights_and_seeded_subsets(tmp_path):
    recs = [dict(TEXT, id=f"t{i}") for i in range(10)]
    path = llava_file(tmp_path, recs, images=())
    cfg = lambda seed, w: DataConfig(sources=[DataSource(format="llava_json", path=str(path), weight=w)], seed=seed)  # noqa: E731
    half = [s.id for s in read_sources(cfg(0, 0.5))]
    assert len(half) == 5 and half == [s.id for s in read_sources(cfg(0, 0.5))]
    assert half != [s.id for s in read_sources(cfg(1, 0.5))]
    assert len(read_sources(cfg(0, 2.5))) == 25


def test_id_pattern_keeps_matching_records_before_the_subset(tmp_path):
    recs = [dict(TEXT, id=f"ask-{i}") for i in range(6)] + [dict(TEXT, id=f"fact-{i}") for i in range(6)]
    path = llava_file(tmp_path, recs, images=())
    src = lambda **kw: DataConfig(sources=[DataSource(format="llava_json", path=str(path), **kw)])  # noqa: E731
    assert sorted(s.id for s in read_sources(src(id_pattern="ask-"))) == [f"ask-{i}" for i in range(6)]
    drawn = [s.id for s in read_sources(src(id_pattern="(ask|fact)-[0-2]", num_samples=4))]
    assert len(drawn) == 4 and all(i.split("-")[1] in "012" for i in drawn)
    # matched from the start of the id, so "-1" matches nothing
    with pytest.raises(BadRecord, match=r"id_pattern '-1' matches none of its 12 record ids \(e\.g\. 'ask-0'\)"):
        read_sources(src(id_pattern="-1"))


def test_id_pattern_that_is_not_a_regex_names_the_key(tmp_path):
    from lora_vl.recipe import RecipeError, build

    with pytest.raises(RecipeError, match=r"sources\[0\]\.id_pattern: not a regular expression"):
        build(DataConfig, {"sources": [{"format": "llava_json", "path": "d.json", "id_pattern": "ask-("}]},
              where="stage2.data")


def test_id_pattern_at_its_default_leaves_fingerprints_of_earlier_runs_unchanged():
    import dataclasses as dc

    from lora_vl.artifacts import fingerprint_obj
    from lora_vl.train.config import StageConfig
    from lora_vl.train.stage import stage_fingerprint

    stage = StageConfig(data=DataConfig(sources=[DataSource(format="llava_json", path="d.json")]))
    before = dc.asdict(stage)
    del before["data"]["sources"][0]["id_pattern"]  # a stage of runs made before the key existed
    assert stage_fingerprint(stage) == fingerprint_obj([before])
    stage.data.sources[0].id_pattern = "ask-"
    assert stage_fingerprint(stage) != fingerprint_obj([before])


def test_length_grouping_reduces_padding():
    rng = torch.Generator().manual_seed(0)
    lengths = torch.randint(20, 600, (2000,), generator=rng).tolist()
    grouped = length_grouped_batches(lengths, 8, seed=0)
    assert sorted(i for b in grouped for i in b) == list(range(2000))
    assert padding_fraction(lengths, grouped) < 0.5 * padding_fraction(lengths, random_batches(lengths, 8, 0))
    assert grouped == length_grouped_batches(lengths, 8, seed=0) != length_grouped_batches(lengths, 8, seed=1)


def test_missing_and_corrupt_images_are_named(tmp_path, proc, capsys):
    path = llava_file(tmp_path, [GOOD, dict(GOOD, id="r2", image="gone.png"), dict(GOOD, id="r3", image="bad.png")])
    (tmp_path / "bad.png").write_bytes(b"not a png at all")
    cfg = DataConfig(sources=[DataSource(format="llava_json", path=str(path))])
    with pytest.raises(BadRecord, match=r"record 'r2'.*gone.png not found"):
        TrainSet(cfg, proc)
    cfg.bad_records = "skip"
    data = TrainSet(cfg, proc)
    assert len(data) == 1
    report = data.report.as_dict()
    assert report["skipped_bad"] == {str(path): 2}
    assert any("bad.png is not a readable image" in e for e in report["skip_examples"])
    assert "using 1 records; skipped 2 bad" in capsys.readouterr().out   # reported, not silent


def test_bad_conversations_are_named(tmp_path, proc):
    no_answer = {"id": "q", "conversations": [{"from": "human", "value": "Hi"}]}
    extra_image = {"id": "x", "image": "a.png", "conversations": [
        {"from": "human", "value": "<image> <image>"}, {"from": "gpt", "value": "ok"}]}
    for rec, match in [(no_answer, "record 'q': no assistant turn"), (extra_image, "record 'x': 2 '<image>'")]:
        cfg = DataConfig(sources=[DataSource(format="llava_json", path=str(llava_file(tmp_path, [rec])))])
        with pytest.raises(BadRecord, match=match):
            TrainSet(cfg, proc)
    wrong_role = {"id": "w", "conversations": [{"from": "bot", "value": "x"}]}
    with pytest.raises(BadRecord, match="record 'w': turn 0"):
        read_llava_json(llava_file(tmp_path, [wrong_role]))


def test_overlong_samples_are_dropped_and_counted(tmp_path, proc):
    path = llava_file(tmp_path, [GOOD, TEXT])
    lengths = TrainSet(DataConfig(sources=[DataSource(format="llava_json", path=str(path))]), proc).lengths
    assert lengths[1] < lengths[0]  # the text record is the shorter one
    data = TrainSet(DataConfig(sources=[DataSource(format="llava_json", path=str(path))], max_length=lengths[1]), proc)
    assert len(data) == 1 and data.samples[0].id == "t1" and data.report.dropped_overlong == 1


def test_hub_id_without_network_is_explained():
    with pytest.raises(InputError, match="model 'no-such-org/no-such-llava': not a local path, and the hub "
                       "could not serve it .*offline"):
        load_vlm("no-such-org/no-such-llava", quantization="none")


def test_projector_for_another_encoder_is_refused(tiny_bases, tmp_path):
    clip, _ = load_vlm(tiny_bases[("llama", "clip")], quantization="none")
    L.save_projector(clip, tmp_path / "p.safetensors")
    qwen, _ = load_vlm(tiny_bases[("qwen2", "siglip")], quantization="none")
    L.load_projector(qwen, tmp_path / "p.safetensors")   # same shapes: accepted
    other = torch.nn.Linear(7, 64)
    clip.model.multi_modal_projector.linear_1 = other
    L.save_projector(clip, tmp_path / "q.safetensors")
    with pytest.raises(InputError, match=r"linear_1.weight.*vision hidden size 32"):
        L.load_projector(qwen, tmp_path / "q.safetensors")


def test_existing_result_is_never_overwritten_by_another_recipe(tmp_path):
    out = tmp_path / "adapter"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"fingerprint": "abc"}))
    (out / "adapter_model.safetensors").write_bytes(b"keep")
    assert finished(out, "abc")
    with pytest.raises(InputError, match="different recipe"):
        finished(out, "other")
    assert (out / "adapter_model.safetensors").read_bytes() == b"keep"


def test_failed_write_leaves_previous_artifact(tmp_path):
    from lora_vl.artifacts import atomic_dir

    final = tmp_path / "art"
    with atomic_dir(final) as tmp:
        (tmp / "f").write_text("v1")
    with pytest.raises(RuntimeError):
        with atomic_dir(final, overwrite=True) as tmp:
            (tmp / "f").write_text("half")
            raise RuntimeError("crash mid-write")
    assert (final / "f").read_text() == "v1"
    assert [p.name for p in tmp_path.iterdir()] == ["art"]
    shutil.rmtree(final)


def test_image_corrupt_past_its_header_is_caught_at_batch_time(tmp_path, proc):
    path = llava_file(tmp_path, [GOOD, dict(GOOD, id="r2", image="trunc.png")])
    good = (tmp_path / "a.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(good[: len(good) // 2])   # valid header, data cut off
    cfg = DataConfig(sources=[DataSource(format="llava_json", path=str(path))])
    data = TrainSet(cfg, proc)                       # the header check admits it
    bad = next(i for i, s in enumerate(data.samples) if s.id == "r2")
    with pytest.raises(BadRecord, match=r"record 'r2'.*trunc.png is corrupt"):
        data[bad]
    cfg.bad_records = "skip"
    data = TrainSet(cfg, proc)
    assert data[bad] is None and data.report.as_dict()["skipped_bad"] == {str(path): 1}


def test_truncation_boundary_is_exactly_after_the_last_image_token(proc):
    """A cut right after the last image token keeps every image token and is allowed; a cut one
    token earlier would split the image and is refused (catches an off-by-one at the boundary)."""
    from lora_vl.data.encode import IMAGE_PLACEHOLDER, Overlong, encode_chat

    image_id = proc.tokenizer.convert_tokens_to_ids(IMAGE_PLACEHOLDER)
    msgs = [{"role": "user", "content": f"{IMAGE_PLACEHOLDER}\nDescribe it."},
            {"role": "assistant", "content": "A green square on a plain background, drawn small."}]
    img = [Image.new("RGB", (20, 20), "green")]
    full = encode_chat(proc, msgs, img)
    last = max(i for i, t in enumerate(full.input_ids) if t == image_id)
    first_label = min(i for i, label in enumerate(full.labels) if label != -100)
    assert last < first_label  # the answer follows the image
    # keep up to the first labelled token: the cut is after the image, so it is allowed
    kept = encode_chat(proc, msgs, img, max_length=first_label + 1, truncate=True)
    assert kept.input_ids == full.input_ids[:first_label + 1]
    assert kept.input_ids.count(image_id) == full.input_ids.count(image_id)
    with pytest.raises(Overlong, match="would split image tokens"):
        encode_chat(proc, msgs, img, max_length=last, truncate=True)  # would drop the last image token
    with pytest.raises(Overlong, match="no assistant token left"):  # the image fits; the answer does not
        encode_chat(proc, msgs, img, max_length=last + 1, truncate=True)
