"""`lora-vl fetch` and `lora-vl push`: what the recipes need from the Hub, downloaded with
huggingface_hub into the paths the recipes read, pinned in lora-vl.lock; artifacts uploaded."""
