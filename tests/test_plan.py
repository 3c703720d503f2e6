"""`lora-vl plan`: the live-bytes tracker against independent accounts of the same step, and the
depth / batch / decode extrapolation against measured larger models. Tiny models of real
architectures (the session's composed tiny Llava bases), real 4-bit layers, real PEFT LoRA."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from torch._C._profiler import _EventType
from torch.profiler import ProfilerActivity, profile

from lora_vl.plan import cpu_bf16
from lora_vl.plan import step as plan_step
from lora_vl.plan import tracker as T
from lora_vl.plan.build import Workload, build_llava, prepare
from lora_vl.plan.fit import GIB, DepthFit, Overhead, Prediction, largest_micro_batch
from lora_vl.plan.shapes import base_shape
from lora_vl.plan.step import CATEGORIES, STEP_EVENT, Measured, known_tensors, measure, train_step
from lora_vl.plan.tracker import PhasePeak
from lora_vl.train.config import LoraSettings, OptimConfig

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
LORA = LoraSettings(r=8, alpha=16, dropout=0.05)


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
    # bf16 matmuls as they are (no fp32 scratch): test_plan_cpu_bf16 shows the same bytes either way
    monkeypatch.setattr(cpu_bf16, "matmul_rates", lambda: (1.0, 1.0))
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


@pytest.mark.parametrize("kind,chunk", [("stage2", 0), ("dpo", 0), ("stage2", 16), ("dpo", 16)])
def test_flop_count_matches_torch_flop_counter(shape, kind, chunk, monkeypatch):
    """The step-time model's FLOPs against torch's FlopCounterMode on the real step (16-bit
    base, whose matmuls the counter knows); with a chunked loss, lm_head on the scored positions,
    recomputed in the backward."""
    from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

    from lora_vl.plan.cost import train_flops

    # the counter knows CUDA's attention kernels; teach it the CPU one (causal: half the scores)
    def attention(q, k, v, dropout_p=0.0, is_causal=False, *args, out_val=None, **kwargs):
        return sdpa_flop_count(q, k, v) // (2 if is_causal else 1)

    def attention_backward(grad, q, k, v, out, lse, dropout_p=0.0, is_causal=False, *args, out_val=None, **kwargs):
        return sdpa_backward_flop_count(grad, q, k, v) // (2 if is_causal else 1)

    cpu_attention = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: attention,
                     torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: attention_backward}
    w = workload(kind, length=64, loss_chunk_tokens=chunk)
    w.quantization = "none"
    # the step's own operators, not cpu_bf16's fp32 stand-ins (which a mode below it would count too)
    monkeypatch.setattr(cpu_bf16, "matmul_rates", lambda: (1.0, 1.0))
    st = prepare(build_llava(shape.llava_config(2), "none", CPU, {}), w)
    with FlopCounterMode(display=False, custom_mapping=cpu_attention) as counter:  # the warm-up has no matmuls
        stats = train_step(st, shape, w, w.rows, CPU)[2]
    assert counter.get_flop_counts()["Global"][torch.ops.aten._scaled_dot_product_flash_attention_for_cpu] > 0
    two_layers = base_shape_with_depth(shape, 2)
    frozen = LORA.r if kind == "dpo" else 0
    predicted = stats["micro_batches"] * train_flops(two_layers, kind, w.rows, 64, LORA.r, frozen, loss_chunk=chunk)
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


def test_the_step_time_adds_the_offloaded_checkpoints_copies(tiny_bases, tmp_path):
    """With the offload, a micro-batch's time is its FLOP time plus two copies of the predicted host
    bytes over the stated host link; without it, the FLOP time alone (the same FLOPs)."""
    from lora_vl.plan import cli as plan_cli

    recipe = write_recipe(tmp_path, tiny_bases[("llama", "clip")])
    times, hosts = {}, {}
    for offload in (False, True):
        args = plan_cli.parser().parse_args([recipe, f"model.offload_checkpoints={str(offload).lower()}",
                                             "--layers", "1,2", "--gpu", "rtx3090"])
        with plan_cli.quiet_warnings():
            p = plan_cli.plan(args)
        times[offload], hosts[offload] = p["time"], p["prediction"].get("host_offload_bytes", 0)
    assert hosts[False] == 0 and hosts[True] > 0 and times[False]["offload_copies_s"] == 0
    assert times[True]["flops_per_micro_batch"] == times[False]["flops_per_micro_batch"]
    copies = 2 * hosts[True] / (32e9 * 0.80)  # PCIe 4.0 x16 at the assumed 80%
    assert times[True]["offload_copies_s"] == pytest.approx(copies, rel=1e-9)
    assert times[True]["micro_batch_s"] == pytest.approx(times[False]["micro_batch_s"] + copies, rel=1e-9)


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


def test_a_cpu_that_emulates_bf16_is_told_how_the_plan_runs_and_how_long_it_takes(monkeypatch, capsys):
    """The planner's steps run under bf16 autocast; an AVX2-only CPU emulates bf16 (measured here
    ~500x slower than fp32): the matmuls run in fp32 (plan/cpu_bf16.py) and the user is told."""
    from lora_vl.plan import cli as plan_cli

    a = plan_cli.parser().parse_args(["recipes/paper/adapt_llama2_chat_7b.yaml"])
    shape, w, _ = plan_cli.from_recipe(a.recipe, a.overrides, a)
    monkeypatch.setattr(cpu_bf16, "matmul_rates", lambda: (1e11, 2e8))
    plan_cli.warn_slow_bf16(shape, w, [1, 2, 4], 1)
    flops = plan_cli.train_flops(shape, "stage2", 1, w.length, w.lora.r, 0, True) * 7 / shape.layers * 2
    err = capsys.readouterr().err
    assert "emulates bf16 (a bf16 matmul ran 500x slower" in err and f"about {flops / 1e11 / 60:.0f} min" in err
    monkeypatch.setattr(cpu_bf16, "matmul_rates", lambda: (1e11, 2e11))  # native bf16: nothing to say
    plan_cli.warn_slow_bf16(shape, w, [1, 2, 4], 1)
    assert capsys.readouterr().err == ""


# --- per phase, every category to the byte: accumulation, paged state, decode lengths --------------
# Each expected value below is computed by hand (tiny configs) or from the model's / optimizer's own
# tensors, and compared exactly: a missing gradient, paged-state or KV term shows up in full.

DATA_CATS = (T.ACTIVATIONS, T.LOGITS, T.WEIGHT_COPY, T.OPTIM_TEMP, T.KV_CACHE, T.DEQUANT)


def storages_rounded(tensors) -> int:
    """Bytes of the distinct storages among `tensors`, each rounded to the allocator's block."""
    seen = {t.untyped_storage()._cdata: t.untyped_storage().nbytes() for t in tensors if isinstance(t, torch.Tensor)}
    return sum(T.rounded(n) for n in seen.values())


def model_categories(model, kinds=("4bit", "base16", "vision", "projector", "lora")) -> dict[str, int]:
    """What the model holds before the step, from its own tensors."""
    held = known_tensors(model)
    return {CATEGORIES[k]: storages_rounded(held[k]) for k in kinds if held[k]}


def batch_bytes(shape, rows: int, length: int, pixel_dtype: torch.dtype) -> int:
    """make_batch by hand: ids, mask and labels (int64) of rows × length, pixels rows × 3 × size²."""
    size = shape.vision.image_size
    return 3 * T.rounded(rows * length * 8) + T.rounded(rows * 3 * size * size * pixel_dtype.itemsize)


def test_gradients_of_the_earlier_micro_batch_are_alive_in_every_phase_of_the_measured_one(shape):
    """With accumulation the measured micro-batch is the step's second: the first one's gradients
    (exactly the trainable parameters' bytes) are alive from its first forward phase to the
    optimizer. Without accumulation a forward phase holds no gradient. Every other category of
    every phase is the same as without accumulation, but for the first micro-batch's loss scalar
    (the loop holds it until the second's loss replaces it)."""
    w1, w4 = workload("stage2", accum=1), workload("stage2", accum=4)
    st = prepare(build_llava(shape.llava_config(3), "4bit", CPU, {}), w4)
    grads = rounded_bytes(st.trainable)
    adamw = sum(2 * rounded_bytes([p]) + T.rounded(4) for p in st.trainable)  # exp_avg, exp_avg_sq, fp32 step
    fixed = {**model_categories(st.model), "optimizer state": adamw,
             "inputs": batch_bytes(shape, 2, 96, st.pixel_dtype)}
    one, four = train_step(st, shape, w1, 2, CPU)[0], train_step(st, shape, w4, 2, CPU)[0]
    assert set(one) == set(four) and {"forward.vision", "forward.layers", "forward.head", "backward.head",
                                      "backward.top", "optimizer"} <= set(four)
    loss_scalar = T.rounded(4)
    for name in four:
        b1, b4 = one[name].breakdown, four[name].breakdown
        assert sum(b4.values()) == four[name].bytes and sum(b1.values()) == one[name].bytes
        for cat, n in fixed.items():  # the model's, the optimizer's and the batch's bytes, every phase
            assert b1.get(cat) == n and b4.get(cat) == n, (name, cat)
        if name == "start":
            continue
        assert b4["gradients"] == grads, name  # the first micro-batch's, whole, in every phase
        if name.startswith("forward"):
            assert "gradients" not in b1, name
            for cat in DATA_CATS:  # what the measured micro-batch itself allocates: the same
                extra = loss_scalar if cat == T.ACTIVATIONS else 0
                assert b4.get(cat, 0) == b1.get(cat, 0) + extra, (name, cat)
            assert four[name].bytes == one[name].bytes + grads + loss_scalar
    assert one["optimizer"].breakdown == four["optimizer"].breakdown  # the step's end: all gradients, once
    assert one["optimizer"].breakdown["gradients"] == grads


def test_paged_state_is_the_state_of_parameters_from_bitsandbytes_threshold_on():
    """bitsandbytes pages the per-element states of parameters with at least 1e5 elements
    (`get_state_buffer`: `p.numel() < 1e5` stays in device memory)."""
    assert plan_step.PAGED_MIN_NUMEL == 100_000
    big = torch.nn.Parameter(torch.zeros(100_000))  # paged: exp_avg and exp_avg_sq, 400000 B each
    small = torch.nn.Parameter(torch.zeros(99_999))  # one element short: not paged
    opt = torch.optim.AdamW([big, small])
    big.grad, small.grad = torch.zeros_like(big), torch.zeros_like(small)
    opt.step()
    big.grad = small.grad = None
    t = T.LiveBytes("cpu", vocab_size=10, params=[big, small], optimizer=opt, paged_min_numel=plan_step.PAGED_MIN_NUMEL)
    t.add_known([v for s in opt.state.values() for v in s.values()], "optimizer state")
    with t:
        pass
    b = t.finish()["start"].breakdown
    assert b == {T.OPTIM_PAGED: 2 * 400_384, T.OPTIM: 2 * 400_384 + 2 * 512}  # 399996 B rounds up alike


def test_paged_optimizer_state_in_every_phase_and_its_share_of_the_card(shape, monkeypatch):
    """paged_adamw_8bit with the paging threshold at 2048 elements (the tiny projector's smaller
    weight): its two states are paged (fp32: bitsandbytes keeps parameters under 4096 elements in
    32-bit) and so are the 64×64 weight's (8-bit: 1 byte per element); nothing else is. The paged
    bytes are outside the allocator, on the card without slack."""
    made = []

    def recording(groups, cfg):
        made.append(make(groups, cfg))
        return made[-1]

    make = plan_step.make_optimizer
    monkeypatch.setattr(plan_step, "make_optimizer", recording)
    monkeypatch.setattr(plan_step, "PAGED_MIN_NUMEL", 2048)
    w = workload("stage2", optimizer="paged_adamw_8bit", accum=2)
    st = prepare(build_llava(shape.llava_config(2), "4bit", CPU, {}), w)
    named = {n: p for n, p in st.model.named_parameters() if p.requires_grad}
    sizes = sorted(p.numel() for p in named.values())
    assert sizes[-2:] == [2048, 4096] and sizes[-3] < 2048  # projector linear_1 / linear_2 weights
    paged = 2 * T.rounded(2048 * 4) + 2 * T.rounded(4096 * 1)
    phases = train_step(st, shape, w, 2, CPU)[0]
    opt = made[0]
    states = [v for s in opt.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
    unpaged = storages_rounded(states) - paged
    for name, p in phases.items():
        b = p.breakdown
        assert b[T.OPTIM_PAGED] == paged and b[T.OPTIM] == unpaged, name
        if name != "start":
            assert b["gradients"] == rounded_bytes(st.trainable), name
        pred = Prediction(name, b)
        assert pred.allocator == p.bytes - paged
        overhead = Overhead(context_gib=0.5, slack=0.25)
        assert pred.card_bytes(overhead) == (p.bytes - paged) * 1.25 + paged + 0.5 * GIB


def test_card_size_counts_paged_state_once_without_slack():
    """By hand: 2 GiB gradients + 3 GiB activations in the allocator, 1 GiB paged state outside it."""
    pred = Prediction("optimizer", {T.GRADS: 2 * GIB, T.ACTIVATIONS: 3 * GIB, T.OPTIM_PAGED: GIB})
    assert pred.total == 6 * GIB and pred.allocator == 5 * GIB
    assert pred.card_bytes(Overhead(context_gib=0.5, slack=0.1)) == pytest.approx(5.5 * GIB + GIB + 0.5 * GIB, abs=1)


def phases_of(layers: int, tokens: int = 1, new_tokens: int = 6):
    """Hand-made measured phases, linear in depth (per layer: 1 MiB gradients, 2 MiB optimizer
    state, 1 MiB of it paged, 4 MiB activations, a KV cache of 2 × 512 B per token)."""
    M = 2 ** 20
    model = {T.GRADS: layers * M, T.OPTIM: M + 2 * layers * M, T.OPTIM_PAGED: layers * M, "projector": 3 * M}
    kv = lambda n: 2 * layers * 512 * n  # noqa: E731  (K and V, 512 B per token and layer)
    out = {"optimizer": {**model, T.OPTIM_TEMP: layers * M},
           "forward.head": {**model, T.ACTIVATIONS: (8 + 4 * layers) * M, T.LOGITS: 16 * M, "inputs": M},
           "prefill": {**model, T.KV_CACHE: kv(24)},
           "decode.first": {**model, T.KV_CACHE: kv(24 + 1)},
           "decode.last": {**model, T.KV_CACHE: kv(24 + new_tokens - 1)}}
    return Measured(layers, 1, {k: PhasePeak(sum(v.values()), v) for k, v in out.items()}, 0.0)


def test_depth_fit_scales_data_not_model_bytes_and_counts_decode_steps_by_hand():
    M = 2 ** 20
    fit = DepthFit([phases_of(2), phases_of(4)], new_tokens=6)
    model_at_10 = {T.GRADS: 10 * M, T.OPTIM: 21 * M, T.OPTIM_PAGED: 10 * M, "projector": 3 * M}
    # 3× the measured tokens: activations, logits, inputs, KV cache scale; gradients and state do not
    assert fit.phase_at("forward.head", 10, 3.0) == {**model_at_10, T.ACTIVATIONS: 3 * 48 * M,
                                                     T.LOGITS: 3 * 16 * M, "inputs": 3 * M}
    assert fit.phase_at("optimizer", 10, 3.0) == {**model_at_10, T.OPTIM_TEMP: 10 * M}
    # decode call c holds the prompt and the c - 1 tokens generated before: 24 + 99 at the 100th
    for n in (3, 6, 100):
        assert fit.decode_step(10, 1.0, n) == {**model_at_10, T.KV_CACHE: 2 * 10 * 512 * (24 + n - 1)}
        assert fit.decode_step(10, 2.0, n)[T.KV_CACHE] == 2 * 2 * 10 * 512 * (24 + n - 1)
    pred = fit.predict(10, 1.0, new_tokens=20_000)  # a long answer: the last decode step is the peak
    assert pred.phase == "decode.last" and pred.breakdown == {**model_at_10, T.KV_CACHE: 2 * 10 * 512 * (24 + 19_999)}
    # card need at micro-batch b (forward.head): (model in the allocator 34 MiB + 65 MiB of data × b)
    # × (1 + slack) + the paged 10 MiB + the 1 GiB context
    overhead = Overhead(context_gib=1.0, slack=0.5)
    need = lambda b: (34 * M + b * (48 + 16 + 1) * M) * 1.5 + 10 * M + GIB  # noqa: E731
    assert fit.predict(10, 3.0).phase == "forward.head"
    assert fit.predict(10, 3.0).card_bytes(overhead) == pytest.approx(need(3), abs=1)
    card = need(4) / GIB + 1e-6  # micro-batch 4 just fits, 8 does not
    assert largest_micro_batch(fit, 10, 100, 100, card, overhead) == 4
    assert largest_micro_batch(fit, 10, 100, 100, need(4) / GIB - 1e-6, overhead) == 2


@pytest.mark.parametrize("new_tokens", [3, 6])
def test_kv_cache_of_every_decode_step_to_the_byte(shape, new_tokens):
    """Generation's KV cache at call c of a `new_tokens` answer: K and V of every layer, kv heads ×
    head dim per token, for the prompt and the c - 1 tokens generated so far, in bf16. Eight
    rows make a token of one layer's K exactly one 512-byte block, so each token shows."""
    layers, rows, prompt = 2, 8, 24
    w = workload("eval", length=prompt, micro_batch=rows, new_tokens=new_tokens)
    run = measure(shape, w, layers, rows, CPU, {})
    t = shape.text
    kv_heads, head_dim = t.num_key_value_heads, t.hidden_size // t.num_attention_heads
    assert (kv_heads, head_dim) == (2, 16)  # the tiny llama: 4 heads of 16, 2 of them for K/V

    def kv(tokens: int) -> int:
        return 2 * layers * T.rounded(rows * kv_heads * tokens * head_dim * 2)

    calls = {"prefill": 1, "decode.first": 2, "decode.last": new_tokens}
    if new_tokens > 3:
        calls["decode.middle"] = new_tokens - 1  # the largest of the calls between
    assert set(run.phases) == {"start", *calls}
    assert T.KV_CACHE not in run.phases["start"].breakdown
    for name, c in calls.items():
        assert run.phases[name].breakdown[T.KV_CACHE] == kv(prompt + c - 1), name


def test_generation_plan_counts_every_decode_step_to_a_long_answer(tiny_bases, tmp_path):
    """`lora-vl plan --eval`: measured with 6 new tokens at 1 and 2 layers, planned for 500; the
    predicted KV cache is the hand count at the base's depth (2 layers): prompt + 499 tokens."""
    from lora_vl.plan import cli as plan_cli

    recipe = write_recipe(tmp_path, tiny_bases[("llama", "clip")])
    args = plan_cli.parser().parse_args([recipe, "--eval", "--batch", "8", "--measure-batch", "8",
                                         "--prompt-length", "24", "--new-tokens", "500", "--layers", "1,2"])
    with plan_cli.quiet_warnings():
        p = plan_cli.plan(args)
    pr = p["prediction"]
    assert (pr["layers"], pr["phase"]) == (2, "decode.last")
    assert pr["breakdown"][T.KV_CACHE] == 2 * 2 * 8 * 2 * 16 * 2 * (24 + 499)
    assert all(r["phases"].keys() >= {"decode.first", "decode.last"} for r in p["measured"])


def test_measured_allocator_peak_leaves_paged_state_out(monkeypatch):
    """`--measure` compares the tracked peak less the paged state with the predicted allocator bytes."""
    from types import SimpleNamespace

    from lora_vl.plan import cli as plan_cli

    phases = {"optimizer": PhasePeak(10_000, {T.OPTIM_PAGED: 4_000, T.GRADS: 6_000}),
              "forward.head": PhasePeak(9_000, {T.OPTIM_PAGED: 4_000, T.ACTIVATIONS: 5_000}),
              "backward.top": PhasePeak(7_000, {T.ACTIVATIONS: 7_000})}
    monkeypatch.setattr(plan_cli, "measure", lambda *a: Measured(2, 1, phases, 1.0, {}, {"step_s": 0.5}))
    shape = SimpleNamespace(layers=2)
    out = plan_cli.measure_full(shape, SimpleNamespace(micro_batch=1), SimpleNamespace(measure_device="cpu"),
                                Prediction("optimizer", {T.OPTIM_PAGED: 4_000, T.GRADS: 6_000}))
    assert out["tracked_allocator_bytes"] == 7_000 and out["predicted_allocator_bytes"] == 6_000


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


def test_the_full_size_measure_keeps_no_random_weights_alive_through_its_step(tiny_bases, monkeypatch):
    """CUDA's max_memory_allocated counts every live tensor, the tracker only the step's: the random
    weights a plan keeps for its next depth (~0.95 GiB at the 7B) made `--measure` read 13 % over
    the planner on an H200. The depths may keep them; the full-size measure must not."""
    from types import SimpleNamespace
    import weakref

    from lora_vl.plan import cli as plan_cli

    refs, alive = [], []
    real_build, real_step = plan_step.build_llava, plan_step.train_step

    def build(config, quantization, device, cache):
        model = real_build(config, quantization, device, cache)
        refs[:] = [weakref.ref(t) for t in cache.values()]
        return model

    def step(*args, **kwargs):
        alive.append(sum(r() is not None for r in refs))
        return real_step(*args, **kwargs)

    monkeypatch.setattr(plan_step, "build_llava", build)
    monkeypatch.setattr(plan_step, "train_step", step)
    shape, w = base_shape(str(tiny_bases[("llama", "clip")])), workload()
    shared = {}
    measure(shape, w, 1, 1, CPU, shared)  # a plan's depth: kept for the next build
    args = SimpleNamespace(measure_device="cpu")
    plan_cli.measure_full(shape, dataclasses.replace(w, micro_batch=1), args, SimpleNamespace(allocator=0))
    assert len(refs) > 0 and alive == [len(shared), 0]


def test_a_measured_step_leaves_nothing_of_its_model_alive(tiny_bases, monkeypatch):
    """Each depth of a plan is measured in the same process, then the full size: whatever one run
    keeps alive sits on the GPU under the next one's max_memory_allocated (the tracker's
    finalizers kept the trained weights and the optimizer of every earlier depth)."""
    import gc
    import weakref

    refs = []
    real_prepare = plan_step.prepare

    def prepare(*args):
        prepared = real_prepare(*args)  # the trained LoRA and projector copy exist from here on
        refs.extend(weakref.ref(p) for p in prepared.model.parameters())
        return prepared

    monkeypatch.setattr(plan_step, "prepare", prepare)
    shape = base_shape(str(tiny_bases[("llama", "clip")]))
    measure(shape, workload(optimizer="paged_adamw_8bit"), 1, 1, CPU, {})
    gc.collect()
    assert refs and [r for r in refs if r() is not None] == []
