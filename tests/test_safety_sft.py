"""Safety SFT on a tiny model: VL adapter untouched, refusals learned, stacked result loads."""
import json

import pytest
import torch
from safetensors.torch import load_file

from lora_vl.artifacts import fingerprint_files
from lora_vl.handoff import HandoffError, read_manifest
from lora_vl.data.dataset import TrainSet
from lora_vl.data.encode import BadRecord, encode_chat
from lora_vl.models import lora as L
from lora_vl.models.load import load_vlm
from lora_vl.models.lora import attach_adapters
from lora_vl.train.loop import train
from lora_vl.train.stage import pixel_dtype
from lora_vl.train.safety import build_training, check_parent, main, run_safety
from safety_helpers import safety_world, sft_recipe  # noqa: F401  (session fixture)
from tests.helpers import assert_model_card

pytestmark = pytest.mark.slow  # whole safety trainings


def frozen_state(model) -> dict[str, torch.Tensor]:
    """Every VL-adapter and projector tensor (and the 4-bit base around them)."""
    return {n: p.detach().clone() for n, p in model.named_parameters()
            if ".adapter_0." in n or L.PROJECTOR in n}


def refusal_loss(model, processor, data: TrainSet) -> float:
    refusals = [i for i, s in enumerate(data.samples) if s.messages[1]["content"].startswith("I'm sorry")]
    batch = data.collate([data[i] for i in refusals])
    batch["pixel_values"] = batch["pixel_values"].to(pixel_dtype(model))
    with torch.no_grad():
        return model(**batch).loss.item()


def test_vl_adapter_frozen_and_refusals_learned(safety_world, tmp_path):
    r = sft_recipe(safety_world, tmp_path / "run", max_steps=20, lr=1e-2)
    st, processor, data = build_training(r, safety_world["base"], safety_world["vl"])
    model, loss_fn = st.model, st.loss_fn
    before, loss_before = frozen_state(model), refusal_loss(model, processor, data)
    assert before and all(".default." in n for n, p in model.named_parameters() if p.requires_grad)
    train(model, st.groups, data, r.sft.optim, ckpt_dir=tmp_path / "ck",
          tb_dir=tmp_path / "tb", fingerprint="t", desc="test", loss_fn=loss_fn,
          pixel_dtype=pixel_dtype(model))
    after = frozen_state(model)
    assert all(torch.equal(before[n], after[n]) for n in before)
    saved = load_file(str(safety_world["vl"] / "adapter_model.safetensors"))
    proj = {k: v for k, v in saved.items() if L.PROJECTOR in k}
    in_model = {k.replace(f"{L.PROJECTOR}.", f"{L.PROJECTOR}.modules_to_save.adapter_0."): v for k, v in proj.items()}
    assert proj and all(torch.equal(v, after[k]) for k, v in in_model.items())
    assert refusal_loss(model, processor, data) < loss_before - 0.1


def test_run_writes_stackable_adapter(safety_world, tmp_path):
    vl_hash = fingerprint_files([safety_world["vl"] / "adapter_model.safetensors"])
    out = run_safety(sft_recipe(safety_world, tmp_path / "run", max_steps=2))
    assert fingerprint_files([safety_world["vl"] / "adapter_model.safetensors"]) == vl_hash
    m = read_manifest(out)
    assert m["kind"] == "safety_adapter" and m["parents"] == [str(safety_world["vl"])] and m["method"] == "sft"
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["modules_to_save"] is None and cfg["base_model_name_or_path"] == str(safety_world["base"])
    assert all("lora_" in k for k in load_file(str(out / "adapter_model.safetensors")))
    assert_model_card(out)

    model, processor = load_vlm(safety_world["base"], quantization="4bit")
    model = attach_adapters(model, [str(safety_world["vl"]), str(out)])
    assert model.base_model.active_adapters == ["adapter_0", "adapter_1"]
    rec = json.loads(safety_world["vlguard"].read_text())[0]
    from lora_vl.data.images import load_rgb

    image = load_rgb(safety_world["vlguard"].parent / rec["image"], "test")
    enc = encode_chat(processor, [{"role": "user", "content": "<image>\nHow do I make a weapon?"}], [image],
                      add_generation_prompt=True)
    ids = torch.tensor([enc.input_ids])
    gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                         pixel_values=enc.pixel_values.to(pixel_dtype(model)), max_new_tokens=5, do_sample=False)
    assert gen.shape[1] > ids.shape[1]
    assert run_safety(sft_recipe(safety_world, tmp_path / "run", max_steps=2)) == out  # finished: reused


def test_parent_errors(safety_world, tmp_path):
    with pytest.raises(HandoffError, match="parent adapter .*nowhere: no such directory"):
        check_parent(tmp_path / "nowhere", safety_world["base"])
    with pytest.raises(HandoffError, match=r"trained on base .*the base here is 'other/base'"):
        check_parent(safety_world["vl"], "other/base")


def test_missing_image_skip_or_error(safety_world, tmp_path):
    recs = json.loads(safety_world["vlguard"].read_text())[:3]
    recs[1]["image"] = "images/does_not_exist.png"
    f = safety_world["vlguard"].parent / "broken.json"
    f.write_text(json.dumps(recs))
    r = sft_recipe(safety_world, tmp_path / "run")
    r.sft.data.sources[0].path = str(f)
    _, processor = load_vlm(safety_world["base"], quantization="none")
    with pytest.raises(BadRecord, match=r"broken.json record '.*does_not_exist.png not found"):
        TrainSet(r.sft.data, processor)
    r.sft.data.bad_records = "skip"
    data = TrainSet(r.sft.data, processor)
    assert sum(data.report.skipped.values()) == len(recs[1]["instr-resp"])


def test_cli_help_lists_keys(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "parent" in out and "dpo[].beta" in out and "vlguard" in out


def test_resumes_from_checkpoint(safety_world, tmp_path):
    import shutil

    r = sft_recipe(safety_world, tmp_path / "run", max_steps=2, save_every=1)
    out = run_safety(r)
    shutil.rmtree(out)  # as if killed after the last checkpoint, before the adapter was written
    out = run_safety(r)
    assert read_manifest(out)["resumed_from"] == 2
