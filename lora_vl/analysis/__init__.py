"""The study's safety-layer analysis (`lora-vl analyze`).

For any causal LM or Llava (+ stacked PEFT adapters):
- `hidden`: the last prompt token's residual stream after every decoder layer;
- `probe`: per layer, how well harmful and benign prompts separate there (held-out linear probe,
  mean-difference direction) and how a reference model's refusal direction fares in another model;
- `weights`: per layer, the Frobenius norm of each adapter's ΔW, from its LoRA factors only;
- `plots`: PNGs of the three.
`run.run_analysis(recipe)` ties them together and writes analysis.json + the PNGs.
"""
