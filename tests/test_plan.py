"""`lora-vl plan`: the live-bytes tracker against independent accounts of the same step, and the
depth / batch / decode extrapolation against measured larger models. Tiny models of real
architectures (the session's composed tiny Llava bases), real 4-bit layers, real PEFT LoRA."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch._C._profiler import _EventType
from torch.profiler import ProfilerActivity, profile

from lora_vl.plan import tracker as T
from lora_vl.plan.build import Workload, build_llava, prepare
from lora_vl.plan.fit import DepthFit
from lora_vl.plan.shapes import base_shape
from lora_vl.plan.step import STEP_EVENT, measure, train_step
from lora_vl.train.config import LoraSettings, OptimConfig

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
LORA = LoraSettings(r=8, alpha=16, dropout=0.05)


@pytest.fixture(scope="module")
def shape(tiny_bases):
    return base_shape(str(tiny_bases[("llama", "clip")]))


def workload(kind="stage2", optimizer="adamw", accum=4, length=96, micro_batch=1, **kw) -> Workload:
    optim = None if kind == "eval" else OptimConfig(micro_batch_size=micro_batch,
                                                    global_batch_size=micro_batch * accum, optimizer=optimizer)
    frozen = [LORA] if kind in ("sft", "dpo", "eval") else []
    return Workload(kind, "4bit", True, LORA if kind != "stage1" else None, frozen, optim, micro_batch, length, **kw)


def rounded_bytes(tensors) -> int:
    return sum(T.rounded(t.numel() * t.element_size()) for t in tensors)


def test_tracker_counts_each_storage_once_while_alive():
    t = T.LiveBytes("cpu", vocab_size=10)
    with t:
        a = torch.zeros(1000)          # 4000 B -> 4096
        view = a[10:]                  # a view: no new storage
        b = torch.ones(3000)           # 12000 B -> 12288
        del a, view
        c = b * 2
        del b, c
    assert t.phases["start"].bytes == 12288 + 12288  # b and c alive together; a was gone
    assert t.total == 0


def test_tracker_phases_keep_their_largest_visit():
    t = T.LiveBytes("cpu", vocab_size=10)
    with t:
        t.phase("layer")
        big = torch.zeros(2048)                    # 8192 B
        del big
        t.phase("head")
        logits = torch.zeros(3, 10)                # last dim = vocabulary: logits
        t.phase("layer")                           # visited again, smaller: the first visit stays
        del logits
    assert t.finish()["layer"].bytes == 8192 and t.phases["layer"].breakdown == {"activations": 8192}
    assert t.phases["head"].breakdown == {"logits & loss": 512}


def allocator_peak(prof) -> int:
    """Peak of live bytes over the measured step from the profiler's raw allocator events."""
    allocs, window, stack = [], None, list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        e = stack.pop()
        if e.tag == _EventType.Allocation:
            allocs.append((e.start_time_ns, e.extra_fields.alloc_size))
        elif e.name == STEP_EVENT:
            window = (e.start_time_ns, e.end_time_ns)
        stack.extend(e.children)
    live = peak = 0
    for when, size in sorted(allocs):
        if window[0] <= when <= window[1]:
            live += size
            peak = max(peak, live)
    return peak


@pytest.mark.parametrize("kind", ["stage2", "stage1"])
def test_step_accounting_matches_model_optimizer_and_allocator(shape, kind, monkeypatch):
    """Parameters, gradients and AdamW state exactly as the model holds them; everything the
    step allocates within 5% of the CPU allocator's own events (the tracker cannot see
    scratch buffers inside kernels)."""
    w = workload(kind)
    st = prepare(build_llava(shape.llava_config(3), "4bit", CPU, {}), w)
    trainable = st.trainable
    phases, _, stats = train_step(st, shape, w, 2, CPU)
    opt = phases["optimizer"].breakdown
    assert opt["gradients"] == rounded_bytes(trainable)
    # torch AdamW: exp_avg and exp_avg_sq like the parameter, and a scalar fp32 step
    assert opt["optimizer state"] == sum(2 * rounded_bytes([p]) + T.rounded(4) for p in trainable)
    named = dict(st.model.named_parameters())
    lora = [p for n, p in named.items() if "lora_" in n]
    assert (opt.get("LoRA params (trained)", 0)) == rounded_bytes(lora)
    assert opt["projector"] == rounded_bytes(p for n, p in named.items() if "multi_modal_projector" in n)
    assert all(sum(p.breakdown.values()) == p.bytes for p in phases.values())
    assert stats["autocast_gaps"] == []  # no op CUDA autocast upcasts met bf16 on the CPU

    monkeypatch.setattr(T, "BLOCK", 1)  # the CPU allocator does not round to CUDA's blocks
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        phases, _, _ = train_step(st, shape, w, 2, CPU)
    tracked = max(p.bytes for p in phases.values()) - phases["start"].bytes
    assert tracked == pytest.approx(allocator_peak(prof), rel=0.05)


@pytest.mark.parametrize("kind,base,chunk", [("stage2", ("llama", "clip"), 0), ("dpo", ("llama", "clip"), 0),
                                             ("stage1", ("qwen2", "siglip"), 0), ("stage2", ("llama", "clip"), 32),
                                             ("dpo", ("llama", "clip"), 32)])
@pytest.mark.slow
def test_depth_fit_from_1_2_4_layers_predicts_8_layers(tiny_bases, kind, base, chunk):
    shape = base_shape(str(tiny_bases[base]))
    w = workload(kind, optimizer="paged_adamw_8bit", loss_chunk_tokens=chunk)
    cache = {}
    runs = [measure(shape, w, n, 1, CPU, cache) for n in (1, 2, 4, 8)]
    fit = DepthFit(runs[:3])
    pred = fit.predict(8)
    assert pred.total == pytest.approx(runs[3].peak, rel=0.01)  # target 5%; per-phase lines are exact here
    assert fit.residual() < 0.01
    # what each layer adds to the model (adapter, its gradients) is exactly linear
    measured = runs[3].phases["optimizer"].breakdown
    at_8 = fit.phase_at("optimizer", 8)
    for cat in ("gradients", "base weights (4-bit)") + (("LoRA params (trained)",) if kind != "stage1" else ()):
        assert at_8[cat] == pytest.approx(measured[cat], abs=2)


@pytest.mark.slow
def test_micro_batch_scaling_predicts_a_larger_micro_batch(shape):
    w = workload("stage2", length=128)
    cache = {}
    fit = DepthFit([measure(shape, w, n, 1, CPU, cache) for n in (1, 2)])
    big = measure(shape, w, 2, 4, CPU, cache)
    assert fit.predict(2, token_scale=4).total == pytest.approx(big.peak, rel=0.03)


@pytest.mark.slow
def test_generation_plan_extrapolates_depth_and_decode_steps(shape):
    w = workload("eval", length=40, new_tokens=6)
    cache = {}
    fit = DepthFit([measure(shape, w, n, 2, CPU, cache) for n in (1, 2, 4)], new_tokens=6)
    w.new_tokens = 14
    big = measure(shape, w, 6, 2, CPU, cache)
    assert fit.predict(6, 1.0, new_tokens=14).total == pytest.approx(big.peak, rel=0.02)
    last = fit.decode_step(6, 1.0, new_tokens=14)
    assert sum(last.values()) == pytest.approx(big.phases["decode.last"].bytes, rel=0.02)
    assert last["KV cache"] > fit.decode_step(6, 1.0, new_tokens=6)["KV cache"]  # grows with the answer


@pytest.mark.parametrize("kind", ["stage2", "dpo"])
def test_flop_count_matches_torch_flop_counter(shape, kind):
    """The step-time model's FLOPs against torch's FlopCounterMode on the real step (16-bit
    base, whose matmuls the counter knows)."""
    from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

    from lora_vl.plan.cost import train_flops

    # the counter knows CUDA's attention kernels; teach it the CPU one (causal: half the scores)
    def attention(q, k, v, dropout_p=0.0, is_causal=False, *args, out_val=None, **kwargs):
        return sdpa_flop_count(q, k, v) // (2 if is_causal else 1)

    def attention_backward(grad, q, k, v, out, lse, dropout_p=0.0, is_causal=False, *args, out_val=None, **kwargs):
        return sdpa_backward_flop_count(grad, q, k, v) // (2 if is_causal else 1)

    cpu_attention = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: attention,
                     torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: attention_backward}
    w = workload(kind, length=64)
    w.quantization = "none"
    st = prepare(build_llava(shape.llava_config(2), "none", CPU, {}), w)
    with FlopCounterMode(display=False, custom_mapping=cpu_attention) as counter:  # the warm-up has no matmuls
        stats = train_step(st, shape, w, w.rows, CPU)[2]
    assert counter.get_flop_counts()["Global"][torch.ops.aten._scaled_dot_product_flash_attention_for_cpu] > 0
    two_layers = base_shape_with_depth(shape, 2)
    frozen = LORA.r if kind == "dpo" else 0
    predicted = stats["micro_batches"] * train_flops(two_layers, kind, w.rows, 64, LORA.r, frozen)
    assert predicted == pytest.approx(counter.get_total_flops(), rel=0.03)


def base_shape_with_depth(shape, n):
    import copy

    from lora_vl.plan.shapes import set_depth

    s = copy.deepcopy(shape)
    set_depth(s.text, n)
    return s


def test_vendored_paper_configs_have_the_published_shapes():
    from transformers import LlavaForConditionalGeneration

    from lora_vl.plan.shapes import compose_shape

    for lm in ("meta-llama/Llama-2-7b-chat-hf", "allenai/tulu-2-7b"):
        s = compose_shape(lm, "openai/clip-vit-large-patch14-336")
        assert (s.layers, s.vocab_size, s.image_tokens, s.image_token_id) == (32, 32001, 576, 32000)
        with torch.device("meta"):
            model = LlavaForConditionalGeneration(s.llava_config())
        lm_params = sum(p.numel() for n, p in model.named_parameters()
                        if "vision_tower" not in n and "multi_modal_projector" not in n)
        assert lm_params == 6_738_415_616 + 2 * 4096  # Llama-2-7B, plus the <image> row in embed and head


def write_recipe(tmp_path, base, **stage2) -> str:
    import yaml

    stage = {"data": {"sources": [{"format": "llava_json", "path": "unused.json"}], "max_length": 96},
             "optim": {"micro_batch_size": 2, "global_batch_size": 8, "optimizer": "paged_adamw_8bit", **stage2}}
    recipe = {"output_dir": str(tmp_path / "run"), "model": {"base": str(base)},
              "lora": {"r": 8, "alpha": 16}, "stage1": stage, "stage2": stage}
    path = tmp_path / "adapt.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


def test_cli_plans_and_measures_through_the_same_code(tiny_bases, tmp_path, capsys):
    from lora_vl.cli import main

    recipe = write_recipe(tmp_path, tiny_bases[("llama", "clip")])
    out = tmp_path / "plan.json"
    assert main(["plan", recipe, "--layers", "1,2", "--measure", "--measure-device", "cpu",
                 "--json", str(out), "--gpu-memory", "12GB"]) == 0
    text = capsys.readouterr().out
    assert "PREDICTED peak at 2 layers, micro-batch 2 × 96" in text and "MEASURED full size on cpu" in text
    plan = json.loads(out.read_text())
    pred, meas = plan["prediction"], plan["measure"]
    assert meas["tracked_allocator_bytes"] == pytest.approx(pred["allocator_bytes"], rel=0.10)
    assert pred["card_bytes"] > pred["allocator_bytes"]  # the stated overhead is on top
    assert set(plan["fits"]) == {"12", "16", "24", "80"}


def test_cli_errors_name_what_is_missing(tiny_bases, tmp_path, capsys):
    from lora_vl.cli import main

    recipe = write_recipe(tmp_path, tiny_bases[("llama", "clip")])
    if not torch.cuda.is_available():
        assert main(["plan", recipe, "--measure"]) == 2
        assert "CUDA is not available" in capsys.readouterr().err
    assert main(["plan", str(REPO / "recipes/paper/safety_sft_vlguard.yaml")]) == 2
    assert "--lm ID --vision ID" in capsys.readouterr().err
    assert main(["plan", recipe, "--gpu-memory", "lots"]) == 2
    assert "--gpu-memory 'lots'" in capsys.readouterr().err


def test_a_cpu_that_emulates_bf16_is_told_how_long_the_plan_will_take(monkeypatch, capsys):
    """The planner's steps run under bf16 autocast; an AVX2-only CPU emulates bf16 (measured here
    ~20-60x slower than fp32) and a 7B plan takes hours: the user is told before it starts."""
    from lora_vl.plan import cli as plan_cli

    a = plan_cli.parser().parse_args(["recipes/paper/adapt_llama2_chat_7b.yaml"])
    shape, w, _ = plan_cli.from_recipe(a.recipe, a.overrides, a)
    ratio, rate = plan_cli.bf16_slowdown(64)
    assert ratio > 0 and rate > 0
    monkeypatch.setattr(plan_cli, "bf16_slowdown", lambda: (20.0, 1e9))
    plan_cli.warn_slow_bf16(shape, w, [1, 2, 4], 1)
    flops = plan_cli.train_flops(shape, "stage2", 1, w.length, w.lora.r, 0, True) * 7 / shape.layers * 2
    err = capsys.readouterr().err
    assert "emulates bf16" in err and f"about {flops / 1e9 / 60:.0f} min" in err
    monkeypatch.setattr(plan_cli, "bf16_slowdown", lambda: (0.8, 1e11))  # native bf16: nothing to say
    plan_cli.warn_slow_bf16(shape, w, [1, 2, 4], 1)
    assert capsys.readouterr().err == ""


def wide_vocab(shape, vocab: int = 4096):
    """The tiny shape with a real-sized vocabulary, so the logits are a visible share of the step."""
    import copy

    s = copy.deepcopy(shape)
    s.text.vocab_size = vocab
    return s


def logits_peak(run) -> int:
    return max(p.breakdown.get(T.LOGITS, 0) for p in run.phases.values())


@pytest.mark.parametrize("kind", ["stage2", "dpo"])
def test_a_chunked_loss_holds_one_chunk_of_logits(shape, kind):
    """`model.loss_chunk_tokens`: the full loss holds at least fp32 logits at every position; the
    chunked one at most one chunk's (its bf16 logits, fp32 copy and log-softmax: 12 B a value,
    measured), whatever the number of labelled tokens; and the step's peak drops by as much."""
    s, chunk, length = wide_vocab(shape), 32, 96
    full = measure(s, workload(kind, length=length, micro_batch=2), 2, 2, CPU, {})
    chunked = measure(s, workload(kind, length=length, micro_batch=2, loss_chunk_tokens=chunk), 2, 2, CPU, {})
    rows = 4 if kind == "dpo" else 2
    assert logits_peak(full) >= 4 * rows * (length - 1) * s.vocab_size
    assert 0 < logits_peak(chunked) <= 12 * chunk * s.vocab_size
    assert chunked.stats["labelled_tokens"] > 4 * chunk  # several chunks ran, one at a time
    assert full.peak - chunked.peak >= (logits_peak(full) - logits_peak(chunked)) / 2


def test_the_depth_fit_scales_chunked_logits_up_to_one_chunk(shape):
    """Measured at micro-batch 1 (fewer labelled tokens than a chunk), the prediction for
    micro-batch 4 (more than a chunk) holds one full chunk of logits, not 4× the measured."""
    s, chunk = wide_vocab(shape), 128
    w = workload("stage2", length=96, loss_chunk_tokens=chunk)
    cache = {}
    fit = DepthFit([measure(s, w, n, 1, CPU, cache) for n in (1, 2)])
    big = measure(s, w, 2, 4, CPU, cache)
    assert fit.runs[0].stats["labelled_tokens"] < chunk < big.stats["labelled_tokens"]
    pred = fit.predict(2, token_scale=4)
    assert pred.breakdown[T.LOGITS] == pytest.approx(logits_peak(big), rel=0.01)
    assert pred.total == pytest.approx(big.peak, rel=0.03)
