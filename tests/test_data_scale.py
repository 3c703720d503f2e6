"""The data check at scale: parallel = serial, the verdict cache and what invalidates it, and
DataLoader workers that change nothing the run computes."""
import json

import pytest
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoProcessor

from lora_vl.data.check import CHUNK, CheckCache
from lora_vl.data.config import DataConfig, DataSource
from lora_vl.data.dataset import TrainSet
from lora_vl.data.encode import BadRecord
from lora_vl.models import lora as L
from lora_vl.models.load import load_vlm
from lora_vl.train.config import LoraSettings, OptimConfig
from lora_vl.train.loop import train
from lora_vl.train.stage import data_provenance


@pytest.fixture
def proc(tiny_bases):
    return AutoProcessor.from_pretrained(tiny_bases[("llama", "clip")])


def record(i: int) -> dict:
    """Good records of varied lengths, with a bad one (no image file, empty answer) now and then."""
    answer = " ".join(["word"] * (1 + i % 17))
    image = "a.png" if i % 3 else None
    if i % 97 == 5:
        image = "missing.png"
    if i % 89 == 7:
        answer = " "
    human = ("<image>\n" if image else "") + f"Question {i}?"
    rec = {"id": f"r{i}", "conversations": [{"from": "human", "value": human}, {"from": "gpt", "value": answer}]}
    return dict(rec, image=image) if image else rec


def write_data(folder, n: int):
    Image.new("RGB", (20, 20), "green").save(folder / "a.png")
    path = folder / "data.json"
    path.write_text(json.dumps([record(i) for i in range(n)]))
    return path


def summary(data: TrainSet):
    return [s.id for s in data.samples], data.lengths, data.report.as_dict()


def test_parallel_check_equals_serial(tmp_path, proc):
    path = write_data(tmp_path, 3 * CHUNK + 10)  # several chunks, so the pool really deals them out
    cfg = DataConfig(sources=[DataSource(format="llava_json", path=str(path))], max_length=40, bad_records="skip")
    serial, parallel = TrainSet(cfg, proc, workers=1), TrainSet(cfg, proc, workers=2)
    assert summary(parallel) == summary(serial)
    report = serial.report.as_dict()
    assert report["dropped_overlong"] > 0 and sum(report["skipped_bad"].values()) > 0
    cfg.bad_records = "error"  # the first bad record in order is the one named, whatever the pool did
    messages = []
    for workers in (1, 2):
        with pytest.raises(BadRecord) as e:
            TrainSet(cfg, proc, workers=workers)
        messages.append(str(e.value))
    assert messages[0] == messages[1] and "record 'r5'" in messages[0]


class Counting(TrainSet):
    """Counts the records actually checked (not answered from the cache)."""
    checked = 0

    def _judge_many(self, records):
        Counting.checked += len(records)
        return super()._judge_many(records)


def checked(cfg, proc, run_dir) -> tuple[int, tuple]:
    Counting.checked = 0
    data = Counting(cfg, proc, cache=CheckCache(run_dir, data_provenance(cfg)), workers=1)
    return Counting.checked, summary(data)


def test_cache_reused_and_invalidated(tmp_path, proc):
    path = write_data(tmp_path, 40)
    cfg = DataConfig(sources=[DataSource(format="llava_json", path=str(path))], max_length=40, bad_records="skip")
    run = tmp_path / "run"
    n, first = checked(cfg, proc, run)
    assert n == 40
    assert checked(cfg, proc, run) == (0, first)          # a rerun: verdicts from the cache, same result
    cfg.bad_records = "error"                              # the policy is applied to cached verdicts
    with pytest.raises(BadRecord, match="record 'r5'"):
        checked(cfg, proc, run)
    cfg.bad_records = "skip"

    cfg.max_length = 30                                    # max_length
    assert checked(cfg, proc, run)[0] == 40
    assert checked(cfg, proc, run)[0] == 0
    path.write_text(json.dumps([record(i) for i in range(1, 41)]))  # the data file
    assert checked(cfg, proc, run)[0] == 40
    proc.tokenizer.chat_template = proc.tokenizer.chat_template.replace("[INST]", "[INST] ")  # the template
    assert checked(cfg, proc, run)[0] == 40
    proc.tokenizer.add_tokens(["zebraword"])                # the tokenizer
    assert checked(cfg, proc, run)[0] == 40
    assert checked(cfg, proc, run)[0] == 0


def run_once(base, cfg_data, tmp_path, name, workers):
    model, proc = load_vlm(base, quantization="none")
    model = L.prepare_base(model, False, gradient_checkpointing=False)
    model = L.add_lora(model, LoraSettings(r=4, alpha=8, dropout=0.1), train_projector=True, seed=0)
    data = TrainSet(cfg_data, proc)
    cfg = OptimConfig(lr=1e-3, max_steps=3, micro_batch_size=2, global_batch_size=4, save_every=3)
    train(model, L.param_groups(model, 1e-3, 1e-3), data, cfg, ckpt_dir=tmp_path / name / "ck",
          tb_dir=tmp_path / name / "tb", fingerprint="same", desc=name, data_workers=workers)
    return (tmp_path / name / "ck" / "step-3" / "trainable.safetensors").read_bytes(), data.report.as_dict()


def test_dataloader_workers_change_no_byte(tiny_bases, toy_world, tmp_path):
    """The same tiny run (images, dropout, a record corrupt past its header skipped at batch time)
    with batches built in the training process and in 2 workers: identical weights and report."""
    records = json.loads(toy_world["instruct"].read_text())[:11]
    img = next(r for r in records if "image" in r)
    Image.new("RGB", (32, 32), "red").save(tmp_path / "cut.png")
    raw = (tmp_path / "cut.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(raw[: len(raw) // 2])
    records.append(dict(img, id="cut", image=str(tmp_path / "cut.png")))
    folder = toy_world["instruct"].parent
    path = tmp_path / "mix.json"
    path.write_text(json.dumps(records))
    cfg = DataConfig(sources=[DataSource(format="llava_json", path=str(path), image_folder=str(folder))],
                     max_length=512, bad_records="skip")
    base = tiny_bases[("llama", "clip")]
    in_process, report0 = run_once(base, cfg, tmp_path, "w0", 0)
    in_workers, report2 = run_once(base, cfg, tmp_path, "w2", 2)
    assert in_process == in_workers
    assert report0 == report2 and sum(report0["skipped_bad"].values()) == 1
    assert set(load_file(tmp_path / "w0" / "ck" / "step-3" / "trainable.safetensors"))
