"""Weight merging in LoRA space: adapter arithmetic on factor tensors, no base model needed.

io       read/write PEFT adapter directories without a base model
algebra  exact weighted sums (factor concatenation) and SVD compression from factors
dense    TIES / DARE / DARE-TIES / magnitude pruning on per-module dense deltas
scratch  full-size buffers the dense path reuses from module to module
schedule per-layer / per-module coefficients
recipe   the YAML schema of `lora-vl merge`
run      one merge: inputs -> method -> adapter dir + manifest
sweep    a grid of merges + sweep.json (what evaluation reads)
export   fold an adapter into its base: a full bf16 checkpoint or a base with the projector baked in
"""
from lora_vl.merge.io import AdapterFile, LoraFactors, MergeError, read_adapter, write_adapter

__all__ = ["AdapterFile", "LoraFactors", "MergeError", "read_adapter", "write_adapter"]
