"""Make the tiny LM a 'safety-aligned chat LLM' before VL adaptation, as the study's
starting point is (LLaMA-2-Chat): full fine-tuning on the toy alignment chat, through the
project's one training loop."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from transformers import AutoModelForCausalLM, AutoTokenizer

from lora_vl.data.config import DataConfig, DataSource
from lora_vl.data.dataset import TrainSet
from lora_vl.train.config import OptimConfig
from lora_vl.train.loop import train


def align_lm(lm_dir: Path, data_file: Path, work_dir: Path, steps: int = 150, seed: int = 0) -> float:
    tok = AutoTokenizer.from_pretrained(lm_dir)
    model = AutoModelForCausalLM.from_pretrained(lm_dir, use_safetensors=True)
    data = TrainSet(DataConfig(sources=[DataSource(format="llava_json", path=str(data_file))],
                               max_length=64, seed=seed), SimpleNamespace(tokenizer=tok))
    cfg = OptimConfig(lr=3e-3, warmup_ratio=0.05, max_steps=steps, micro_batch_size=16,
                      global_batch_size=16, save_every=steps, keep_checkpoints=1, seed=seed)
    res = train(model, [{"params": list(model.parameters()), "lr": cfg.lr}], data, cfg,
                ckpt_dir=work_dir / "checkpoints", tb_dir=work_dir / "tb", fingerprint="toy-align",
                desc="toy LM alignment")
    model.save_pretrained(lm_dir)
    return res.final_loss
