"""Reading a benchmark at full size (not a test; prints measured numbers).

  python bench/bench_read_benchmark.py                  # MMBench-dev shaped: 4,300 rows, ~100 KB JPEGs
  python bench/bench_read_benchmark.py --rows 500       # quick reduced run

Writes an mmbench_dev_en.tsv as VLMEvalKit ships it (base64 images; with --ref-every N every N-th
row is an index reference to the row before), then, in a fresh child process with an empty
datasets cache (a cold first read, Arrow conversion included):
  read     `read_benchmark` (what `lora-vl eval` does before generating): seconds, peak RSS
  decode   `load_image` on every item, one at a time (as generation does): seconds, peak RSS
Peak RSS is the child's VmHWM (/proc/self/status); `baseline` is its RSS after the imports, before
reading, so `peak - baseline` is what reading costs. The target (issue 23): read in <= 30 s with a
peak at most 1 GB above the file's own size, on 2 cores.
"""
from __future__ import annotations

import argparse
import base64
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def write_tsv(path: Path, rows: int, distinct: int, side: int, ref_every: int) -> int:
    from lora_vl.toy.photos import encoded, photo_like

    photos = [base64.b64encode(encoded(photo_like(side, side, seed=k))).decode() for k in range(distinct)]
    with open(path, "w", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image", "source",
                    "l2-category", "split"])
        for i in range(rows):
            image = str(i - 1) if ref_every and i % ref_every == 1 else photos[i % distinct]
            w.writerow([i, f"Which option matches the picture ({i})?", "", "cat", "dog", "car", "tree", "B",
                        "attribute_recognition", image, "bench", "finegrained_perception", "dev"])
    return path.stat().st_size


def rss_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(tsv: str) -> None:
    from lora_vl.evaluation.items import load_image
    from lora_vl.evaluation.readers import read_benchmark
    from lora_vl.evaluation.suite import BenchmarkSpec

    out = {"baseline_rss_mb": rss_mb("VmRSS")}
    t = time.perf_counter()
    items = read_benchmark(BenchmarkSpec(name="mmbench", reader="mmbench", source=tsv), seed=0)
    out.update(items=len(items), read_s=time.perf_counter() - t, read_peak_mb=rss_mb("VmHWM"),
               after_read_rss_mb=rss_mb("VmRSS"))
    t = time.perf_counter()
    sizes = {load_image(it).size for it in items}
    out.update(decoded=len(items), decode_s=time.perf_counter() - t, decode_peak_mb=rss_mb("VmHWM"),
               sizes=sorted(sizes))
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=4300)
    ap.add_argument("--distinct", type=int, default=64, help="distinct photos, cycled over the rows")
    ap.add_argument("--side", type=int, default=512, help="photo side in px (512: ~90-100 KB JPEG)")
    ap.add_argument("--ref-every", type=int, default=0, help="every N-th row an index reference (0: none)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        return child(a.child)
    with tempfile.TemporaryDirectory() as tmp:
        tsv = Path(tmp) / "mmbench_dev_en.tsv"
        size = write_tsv(tsv, a.rows, a.distinct, a.side, a.ref_every)
        env = {**os.environ, "HF_DATASETS_CACHE": str(Path(tmp) / "hf-cache"), "OMP_NUM_THREADS": "2"}
        t = time.perf_counter()
        res = subprocess.run([sys.executable, __file__, "--child", str(tsv)], env=env, capture_output=True,
                             text=True, check=True)
        wall = time.perf_counter() - t
    r = json.loads(res.stdout.strip().splitlines()[-1])
    r.update(rows=a.rows, file_mb=size / 2**20, child_wall_s=wall,
             read_over_file_mb=r["read_peak_mb"] - r["baseline_rss_mb"] - size / 2**20)
    print(json.dumps(r, indent=1))
    print(f"{a.rows} rows, file {r['file_mb']:.0f} MB: read {r['read_s']:.1f} s, peak RSS {r['read_peak_mb']:.0f} MB "
          f"(baseline {r['baseline_rss_mb']:.0f} MB; {r['read_over_file_mb']:+.0f} MB over the file's size); "
          f"decode all one by one {r['decode_s']:.1f} s, peak {r['decode_peak_mb']:.0f} MB")


if __name__ == "__main__":
    main()
