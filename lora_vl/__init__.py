"""lora_vl: reproduce the VL-adaptation safety study with QLoRA adapters on one GPU."""
import logging

# bitsandbytes 0.50, on CPUs with AVX512-BF16, tries at import to fetch an optional CPU kernel from
# the Hugging Face hub (`kernels` package) and logs a warning when it cannot; the kit never uses
# that kernel (its loading policy keeps 4-bit weights in the portable layout), so the warning
# would only mislead.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
