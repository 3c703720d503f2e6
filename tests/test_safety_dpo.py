"""DPO: the loss against a hand computation, the reference = the VL-only model, a short run."""
import math

import pytest
import torch

from lora_vl.handoff import read_manifest
from lora_vl.data.encode import BadRecord
from lora_vl.models.load import load_vlm
from lora_vl.models.lora import attach_adapters
from lora_vl.train.dpo import preference_losses, sequence_logps
from lora_vl.train.preference import PairSet
from lora_vl.train.stage import pixel_dtype
from lora_vl.train.safety import build_training, run_safety
from safety_helpers import dpo_recipe, safety_world  # noqa: F401  (session fixture)


def pair_batch(model, data: PairSet, n: int = 4) -> dict:
    batch = data.collate([data[i] for i in range(n)])
    if "pixel_values" in batch:
        batch["pixel_values"] = batch["pixel_values"].to(pixel_dtype(model))
    return batch


def perturb_safety(model) -> None:
    """LoRA B starts at zero; make the safety adapter do something so policy ≠ reference."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B.default" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def test_preference_loss_by_hand():
    pc, pr = torch.tensor([-3.0, -5.0]), torch.tensor([-4.0, -2.0])
    rc, rr = torch.tensor([-3.5, -4.0]), torch.tensor([-3.0, -3.0])
    beta = 0.5
    logits = [(-3.0 + 4.0) - (-3.5 + 3.0), (-5.0 + 2.0) - (-4.0 + 3.0)]  # 1.5, -2.0
    sig = sum(-math.log(1 / (1 + math.exp(-beta * z))) for z in logits) / 2
    assert preference_losses(pc, pr, rc, rr, beta, "sigmoid").mean().item() == pytest.approx(sig, rel=1e-6)
    ipo = sum((z - 1 / (2 * beta)) ** 2 for z in logits) / 2
    assert preference_losses(pc, pr, rc, rr, beta, "ipo").mean().item() == pytest.approx(ipo, rel=1e-6)
    eps = 0.1
    smooth = sum(-(1 - eps) * math.log(1 / (1 + math.exp(-beta * z))) - eps * math.log(1 / (1 + math.exp(beta * z)))
                 for z in logits) / 2
    assert preference_losses(pc, pr, rc, rr, beta, "sigmoid", eps).mean().item() == pytest.approx(smooth, rel=1e-6)


def test_pair_batches_hold_chosen_then_rejected_rows(safety_world, tmp_path):
    r = dpo_recipe(safety_world, tmp_path / "run")
    st, processor, data = build_training(r, safety_world["base"], safety_world["vl"])
    p = data.samples[0]
    pairs = data.collate([data[0], data[1]])
    for k, answer in enumerate((p.chosen, p.rejected)):
        row = pairs["input_ids"][k * 2]
        text = processor.tokenizer.decode(row[pairs["attention_mask"][k * 2].bool()])
        assert answer in text
    assert pairs["input_ids"].shape[0] == 4


def test_dpo_loss_matches_hand_and_reference_is_vl_only(safety_world, tmp_path):
    r = dpo_recipe(safety_world, tmp_path / "run")
    st, processor, data = build_training(r, safety_world["base"], safety_world["vl"])
    model, loss_fn = st.model, st.loss_fn
    perturb_safety(model)
    model.eval()
    batch = pair_batch(model, data)
    pairs = batch
    ref_c, ref_r = loss_fn.reference_logps(model, pairs)
    with torch.no_grad():
        pol_c, pol_r = sequence_logps(model, pairs).chunk(2)
        loss = loss_fn(model, batch)
    assert not torch.allclose(pol_c, ref_c)  # the safety adapter is back on after the reference pass
    z = (pol_c - pol_r) - (ref_c - ref_r)
    assert loss.item() == pytest.approx((-torch.nn.functional.logsigmoid(0.1 * z)).mean().item(), rel=1e-5)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".default." in n for n in trainable)  # VL adapter frozen again

    vl_model, _ = load_vlm(safety_world["base"], quantization="4bit")
    vl_model = attach_adapters(vl_model, [str(safety_world["vl"])]).eval()
    with torch.no_grad():
        vl_c, vl_r = sequence_logps(vl_model, pairs).chunk(2)
    torch.testing.assert_close(ref_c, vl_c, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ref_r, vl_r, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_dpo_run_raises_the_margin(safety_world, tmp_path):
    r = dpo_recipe(safety_world, tmp_path / "run", max_steps=6)
    out = run_safety(r)
    m = read_manifest(out)
    assert m["kind"] == "safety_adapter" and m["method"] == "dpo" and m["steps"] == 6
    assert m["data_report"]["used"] and m["parents"] == [str(safety_world["vl"])]
    logps = {}
    for name, adapters in {"ref": [safety_world["vl"]], "pol": [safety_world["vl"], out]}.items():
        model, processor = load_vlm(safety_world["base"], quantization="4bit")
        model = attach_adapters(model, [str(a) for a in adapters]).eval()
        data = PairSet(r.dpo.data, processor)
        with torch.no_grad():
            logps[name] = sequence_logps(model, pair_batch(model, data, len(data))).chunk(2)
    margin = (logps["pol"][0] - logps["pol"][1]) - (logps["ref"][0] - logps["ref"][1])
    assert margin.mean() > 0  # the trained adapter prefers the chosen answers more than the reference


@pytest.mark.slow
def test_ipo_trains(safety_world, tmp_path):
    out = run_safety(dpo_recipe(safety_world, tmp_path / "run", loss="ipo", max_steps=1))
    assert read_manifest(out)["recipe"]["dpo"]["loss"] == "ipo"


def test_bad_pairs_skip_or_error(safety_world, tmp_path):
    import json

    rows = json.loads(safety_world["pku_saferlhf"].read_text())[:3]
    rows[1]["response_1"] = rows[1]["response_0"]
    f = tmp_path / "pku.json"
    f.write_text(json.dumps(rows))
    r = dpo_recipe(safety_world, tmp_path / "run")
    r.dpo.data.sources = r.dpo.data.sources[1:]
    r.dpo.data.sources[0].path, r.dpo.data.sources[0].num_samples = str(f), None
    _, processor = load_vlm(safety_world["base"], quantization="none")
    with pytest.raises(BadRecord, match="record '1'.*identical"):
        PairSet(r.dpo.data, processor)
    r.dpo.data.bad_records = "skip"
    data = PairSet(r.dpo.data, processor)
    assert len(data) == 2 and sum(data.report.skipped.values()) == 1


def test_sequence_logps_equal_an_explicit_gather(safety_world, tmp_path):
    """log p(response) summed token by token from the model's own logits: position t predicts
    token t+1, counted only where token t+1 is labelled (a shift the wrong way would fail)."""
    r = dpo_recipe(safety_world, tmp_path / "run")
    st, _, data = build_training(r, safety_world["base"], safety_world["vl"])
    model = st.model
    perturb_safety(model)
    model.eval()
    batch = pair_batch(model, data, n=2)
    with torch.no_grad():
        ours = sequence_logps(model, batch)
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits.double()
    expected = []
    for row in range(batch["input_ids"].shape[0]):
        total = 0.0
        for t in range(batch["input_ids"].shape[1] - 1):
            target = int(batch["labels"][row, t + 1])
            if target != -100:
                total += float(torch.log_softmax(logits[row, t], dim=-1)[target])
        expected.append(total)
    torch.testing.assert_close(ours.double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-5, atol=1e-4)
    assert all(e < 0 for e in expected)


class CountingPairs(PairSet):
    """Counts the pairs actually checked (not answered from the cache)."""
    checked = 0

    def _judge(self, s):
        CountingPairs.checked += 1
        return super()._judge(s)


def test_pair_check_cache_reused_and_invalidated(safety_world, tmp_path):
    """DPO pairs use the data check's cache as `lora-vl adapt` does: a rerun re-checks nothing;
    a changed data file or max_length re-checks."""
    import json

    from lora_vl.data.check import CheckCache
    from lora_vl.train.stage import data_provenance

    f = tmp_path / "pku.json"
    f.write_text(safety_world["pku_saferlhf"].read_text())
    r = dpo_recipe(safety_world, tmp_path / "run")
    cfg = r.dpo.data
    cfg.sources = cfg.sources[1:]
    cfg.sources[0].path, cfg.sources[0].num_samples = str(f), None
    _, processor = load_vlm(safety_world["base"], quantization="none")

    def check() -> tuple[int, list]:
        CountingPairs.checked = 0
        data = CountingPairs(cfg, processor, cache=CheckCache(tmp_path / "cache", data_provenance(cfg)))
        return CountingPairs.checked, data.lengths

    n, lengths = check()
    assert n == len(lengths) > 0
    assert check() == (0, lengths)
    cfg.max_length = 256
    assert check()[0] == n
    assert check()[0] == 0
    rows = json.loads(f.read_text())
    f.write_text(json.dumps(rows[:-1]))
    assert check()[0] == n - 1


@pytest.mark.parametrize("method", ["sft", "dpo"])
def test_safety_build_checks_through_the_cache(safety_world, tmp_path, method):
    from lora_vl.data.check import CheckCache
    from safety_helpers import sft_recipe

    r = (sft_recipe if method == "sft" else dpo_recipe)(safety_world, tmp_path / "run")
    cache = CheckCache(tmp_path / "cache", {"data": "stamp"})
    data = build_training(r, safety_world["base"], safety_world["vl"], cache)[2]
    key = cache.key(getattr(r, method).data, type(data).__name__, data.processor, data.chat_template)
    assert cache.load(key, len(data)) is not None
