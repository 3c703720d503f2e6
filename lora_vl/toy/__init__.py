"""The offline toy world: a small synthetic world in which the study's models really learn.

`lora-vl toy [--scale full|test] [--seed N] [--out DIR]` builds it once (cached per settings).
Its files are an interface that recipes (recipes/toy/), the toy suite (eval/toy.yaml) and the
study read like any other data; nothing outside this package imports it. Layout of a world
(default outputs/toy/world/):

    manifest.json              settings, build timings, record counts, training summaries and
                               `quality` (the measured numbers, written by bench/bench_toy_world.py)
    splits.json                the seeded train / held-out split of every prompt cell
    models/lm-pretrained/      Llama-class LM pretrained from scratch on the web-like corpus
                               (knows harmful procedures; HF checkpoint + tokenizer, safetensors)
    models/lm/                 the same LM aligned into a chat model (refuses harmful asks)
    models/vision/             CLIPModel + CLIPImageProcessor, vision tower trained on the world's
                               pictures (loaded by lora_vl/models/compose.py as a hub CLIP)
    data/pretrain.json         LLaVA stage-1 captions (all pictures, neutral captions)
    data/instruct.json         LLaVA stage-2 instructions (benign only: no harmful ask, no refusal)
    data/images/               their pictures
    data/lm_corpus.jsonl       the LM's pretraining documents ({"text"} or {"messages"})
    data/lm_align.json         the LM's alignment chats (LLaVA JSON, text-only)
    safety/vlguard_train.json  VLGuard-format SFT data     } from training cells only;
    safety/spa_vl.json         SPA-VL-format DPO pairs      } images under safety/images/
    safety/pku_saferlhf.json   PKU-SafeRLHF-format DPO pairs}
    benchmarks/<family>/       held-out benchmarks in the real layouts: sorry_bench, xstest,
                               textqa, figstep, mm_safetybench, vlguard, mmbench, mme, vqav2
                               (see lora_vl/toy/benchmarks.py)
    judge/knowledge.json       every procedure of the world, for the `toy_oracle` judge

Modules: lexicon (what the world knows), space (cells and the split), images, text_data,
vl_data, safety_data, benchmarks, data (writes all files), lm, vision (models), build, cli.
"""
