"""The loss in chunks over the labelled positions (`model.loss_chunk_tokens`): the same loss and
the same gradients as the model's own full-logits loss, to fp32 tolerance, for the token loss
(stages 1-2, safety SFT) and DPO; tiny models of real architectures, the stages' own
preparation (fp32, 16-bit base, so the only difference left is summation order)."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from transformers import AutoModelForCausalLM

from lora_vl.data.config import DataConfig, DataSource
from lora_vl.data.dataset import TrainSet
from lora_vl.data.encode import IGNORE
from lora_vl.models.load import load_vlm
from lora_vl.train import prepare as S
from lora_vl.train.chunked import labelled_token_logps
from lora_vl.train.config import LoraSettings, OptimConfig
from lora_vl.train.dpo import DpoLoss, sequence_logps
from lora_vl.train.loop import TokenLoss
from lora_vl.train.safety import build_training
from safety_helpers import dpo_recipe, safety_world  # noqa: F401  (session fixture)

LORA = LoraSettings(r=4, alpha=8, dropout=0.0)
TOL = dict(rtol=1e-5, atol=1e-6)


def perturb(model, which: str = "lora_B") -> None:
    """LoRA B starts at zero (no gradient reaches A): give every trained B a value."""
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.requires_grad and which in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def loss_and_grads(model, loss_fn, batch: dict, num_items: int) -> tuple[torch.Tensor, dict]:
    for p in model.parameters():
        p.grad = None
    loss = loss_fn(model, batch, num_items)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), grads


def assert_same(full, chunked) -> None:
    (loss_f, grads_f), (loss_c, grads_c) = full, chunked
    torch.testing.assert_close(loss_c, loss_f, **TOL)
    assert grads_c.keys() == grads_f.keys()
    for n in grads_f:
        torch.testing.assert_close(grads_c[n], grads_f[n], **TOL, msg=lambda m, n=n: f"{n}: {m}")


@pytest.fixture(scope="module")
def stage2(safety_world):
    """Stage 2 as `lora-vl adapt` prepares it (LoRA + projector trained, checkpointing on), and a
    batch of 4 toy instructions with images."""
    model, proc = load_vlm(safety_world["base"], quantization="none")
    st = S.lora_stage(model, S.BasePolicy(quantized=False, checkpointing=True), LORA, OptimConfig())
    perturb(st.model)
    data = TrainSet(DataConfig(sources=[DataSource(format="llava_json", path=str(safety_world["instruct"]),
                                                   num_samples=4)], max_length=256), proc)
    batch = data.collate([data[i] for i in range(4)])
    batch["pixel_values"] = batch["pixel_values"].to(st.pixel_dtype)
    st.model.train()
    return st, batch


def chunk_sizes(n: int) -> list[int]:
    """1; a divisor of n (several full chunks); a non-divisor (a last, partial chunk); more than n."""
    divisor = next(d for d in range(n // 2, 0, -1) if n % d == 0 and d > 1)
    return [1, divisor, next(c for c in range(5, n) if n % c), n + 7]


def test_chunked_token_loss_equals_the_full_loss_and_its_gradients(stage2):
    st, batch = stage2
    n = TokenLoss().count(batch)
    items = n + 13  # a step whose other micro-batches hold more tokens: HF's num_items_in_batch
    full = loss_and_grads(st.model, TokenLoss(), batch, items)
    assert any("lora_A" in k for k in full[1]) and any("multi_modal_projector" in k for k in full[1])
    assert all(g.abs().sum() > 0 for g in full[1].values())  # every trained tensor gets a gradient
    for chunk in chunk_sizes(n):
        assert_same(full, loss_and_grads(st.model, TokenLoss(chunk), batch, items))


def test_only_labelled_positions_are_scored(stage2):
    """One log-prob per labelled token, equal to the full logits' at position t for token t+1."""
    st, batch = stage2
    with torch.no_grad():
        logps, rows = labelled_token_logps(st.model, batch, 16)
        logits = st.model(**{k: v for k, v in batch.items() if k != "labels"}).logits.double()
    labels = batch["labels"][:, 1:]
    where = (labels != IGNORE).nonzero()
    assert logps.shape == rows.shape == (len(where),) and len(where) < labels.numel() / 2  # the prompt is not
    expected = torch.log_softmax(logits[:, :-1], -1)[where[:, 0], where[:, 1], labels[where[:, 0], where[:, 1]]]
    torch.testing.assert_close(logps.double(), expected, **TOL)
    assert torch.equal(rows, where[:, 0])


def test_a_batch_with_no_labelled_token_gives_zero_loss_and_zero_gradients(stage2):
    st, batch = stage2
    batch = {**batch, "labels": torch.full_like(batch["labels"], IGNORE)}
    full = loss_and_grads(st.model, TokenLoss(), batch, 1)
    chunked = loss_and_grads(st.model, TokenLoss(8), batch, 1)
    assert float(chunked[0]) == 0.0
    assert_same(full, chunked)
    assert all(not g.any() for g in chunked[1].values())


def test_a_text_only_causal_lm_takes_the_same_chunked_loss(safety_world):
    """The loss finds the last hidden state and lm_head of a plain causal LM under PEFT too."""
    from peft import LoraConfig, get_peft_model

    lm = AutoModelForCausalLM.from_pretrained(safety_world["root"] / "models" / "lm-llama", dtype=torch.float32)
    model = get_peft_model(lm, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]))
    perturb(model)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, lm.config.vocab_size, (3, 40), generator=g)
    labels = ids.clone()
    labels[:, :12] = IGNORE
    labels[1, 30:] = IGNORE
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    full = loss_and_grads(model, TokenLoss(), batch, 100)
    for chunk in (7, 16):
        assert_same(full, loss_and_grads(model, TokenLoss(chunk), batch, 100))


@pytest.mark.parametrize("loss", ["sigmoid", "ipo"])
def test_chunked_dpo_equals_the_full_dpo_loss_and_its_gradients(safety_world, tmp_path, loss):
    """Policy and reference log-probs (sums, or per-token means for IPO) of the response tokens,
    chunked: the same DPO loss and gradients on the safety LoRA."""
    r = dpo_recipe(safety_world, tmp_path / "run", loss=loss)
    st, _, data = build_training(r, safety_world["base"], safety_world["vl"])
    perturb(st.model, "lora_B.default")
    batch = data.collate([data[i] for i in range(3)])
    batch["pixel_values"] = batch["pixel_values"].to(st.pixel_dtype)
    assert isinstance(st.loss_fn, DpoLoss) and st.loss_fn.chunk == 1024  # the recipe default
    st.model.train()
    full = loss_and_grads(st.model, dataclasses.replace(st.loss_fn, chunk=0), batch, 5)
    assert any(g.abs().sum() > 0 for g in full[1].values())
    for chunk in (3, 64):
        assert_same(full, loss_and_grads(st.model, dataclasses.replace(st.loss_fn, chunk=chunk), batch, 5))
    with torch.no_grad():  # the reference pass runs without grad: no checkpointing there
        sums = sequence_logps(st.model, batch, chunk=5)
        torch.testing.assert_close(sums, sequence_logps(st.model, batch), **TOL)
        counts = (batch["labels"][:, 1:] != IGNORE).sum(1)  # IPO's mean: over the response tokens only
        torch.testing.assert_close(sequence_logps(st.model, batch, average=True, chunk=5) * counts, sums, **TOL)


def test_the_recipe_key_reaches_every_stage_loss(safety_world, tmp_path):
    r = dpo_recipe(safety_world, tmp_path / "run")
    r.model.loss_chunk_tokens = 96
    st, _, _ = build_training(r, safety_world["base"], safety_world["vl"])
    assert st.loss_fn.chunk == 96
    model, _ = load_vlm(safety_world["base"], quantization="none")
    policy = S.BasePolicy(quantized=False, checkpointing=False, loss_chunk=32)
    assert S.projector_stage(model, policy, OptimConfig()).loss_fn == TokenLoss(32)
    with pytest.raises(ValueError, match="at least 1"):
        labelled_token_logps(None, {}, 0)


def test_runs_made_before_the_keys_keep_their_fingerprint_and_todays_defaults_are_a_different_run():
    """At the values that compute what runs made before them computed (0 / float32 / float32 / false),
    the memory keys added later (this one, `frozen_dtype`, `trained_dtype`, `offload_checkpoints`) are
    not in a stage's fingerprint, so such a finished or checkpointed run is still recognised; any other
    value is a different run, today's defaults of `loss_chunk_tokens` and `frozen_dtype` included."""
    import dataclasses as dc

    from lora_vl.artifacts import fingerprint_obj
    from lora_vl.train.config import ModelConfig
    from lora_vl.train.stage import stage_fingerprint

    earlier = {"loss_chunk_tokens": 0, "frozen_dtype": "float32", "trained_dtype": "float32",
               "offload_checkpoints": False}  # what runs made before the keys computed
    model = ModelConfig(base="b", **earlier)
    before = {k: v for k, v in dc.asdict(model).items() if k not in earlier}  # the ModelConfig of earlier runs
    assert stage_fingerprint(model, "x") == fingerprint_obj([before, "x"])
    later = {"loss_chunk_tokens": 1024, "frozen_dtype": "compute", "trained_dtype": "compute",
             "offload_checkpoints": True}
    for key, other in later.items():
        assert stage_fingerprint(dc.replace(model, **{key: other}), "x") != stage_fingerprint(model, "x"), key
    assert stage_fingerprint(ModelConfig(base="b"), "x") != stage_fingerprint(model, "x")
