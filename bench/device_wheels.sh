#!/usr/bin/env bash
# The wheels a lent GPU machine without network needs to run `make gpu-check` with this checkout's
# versions (its image has torch, but not bitsandbytes/datasets, and older transformers/peft/hub),
# into .whl/ (git-ignored), under the 64 MiB a device call carries. Run from the repo root:
#
#   bash bench/device_wheels.sh
#   # on the device, first:  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site \
#   #                          .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
#
# transformers 5.25 depends on `kernels` (+ tomlkit), as a pip install on a user's machine brings
# it: carried so the device runs what users run (the kit loads with use_kernels=False,
# `models/load.py:NO_HUB_KERNELS`); huggingface_hub 2.x needs httpx2 + httpcore2 + truststore.
# bitsandbytes is slimmed to its CUDA 13 libraries (the image's torch is cu130): 43 MB -> 10 MB.
set -euo pipefail
PY=${PY:-.venv/bin/python}
dest=.whl
mkdir -p "$dest"
grep -qxF "/$dest/" .git/info/exclude 2>/dev/null || echo "/$dest/" >> .git/info/exclude
version() { "$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$1"; }
specs=()
for name in bitsandbytes transformers peft accelerate datasets dill multiprocess huggingface_hub httpx2 httpcore2 \
            truststore kernels tomlkit; do
  specs+=("$name==$(version "$name")")
done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any -d "$dest" "${specs[@]}"
bnb=$(ls "$dest"/bitsandbytes-*.whl)
tmp=$(mktemp -d)
(cd "$tmp" && unzip -q "$OLDPWD/$bnb" && rm -f bitsandbytes/libbitsandbytes_cuda1[12]*.so bitsandbytes/libbitsandbytes_rocm*.so \
   bitsandbytes/libbitsandbytes_xpu*.so \
 && grep -vE "libbitsandbytes_(cuda1[12]|rocm|xpu)" bitsandbytes-*.dist-info/RECORD > RECORD.slim \
 && mv RECORD.slim bitsandbytes-*.dist-info/RECORD && rm "$OLDPWD/$bnb" && zip -q -r "$OLDPWD/$bnb" .)
rm -rf "$tmp"
du -cb "$dest"/*.whl | tail -1
