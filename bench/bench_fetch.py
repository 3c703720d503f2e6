"""What the lock's checks cost before a run: the sha256 of a data file (`verify_data_file`, the one
hash a stage takes of each fetched JSON) and the file count + bytes of an unpacked image folder
(`verify_data_folder`), measured on files written here. Prints measured numbers only.

  python bench/bench_fetch.py                    # 256 MB file, 20,000 images of 8 KB
  python bench/bench_fetch.py --mb 1030 --files 558000   # paper sizes: llava_v1_5_mix665k.json, LLaVA-Pretrain images
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from lora_vl.lock import file_sha256, folder_stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=256, help="size of the data file to hash, MB")
    ap.add_argument("--files", type=int, default=20000, help="files in the image folder to count")
    ap.add_argument("--file-kb", type=int, default=8, help="size of each image file, KB")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp, "data.json")
        with open(data, "wb") as f:
            for _ in range(a.mb):
                f.write(os.urandom(1 << 20))
        t = time.perf_counter()
        file_sha256(data)
        s = time.perf_counter() - t
        print(f"sha256 of {a.mb} MB: {s:.2f} s ({a.mb / s:.0f} MB/s)")
        folder = Path(tmp, "images")
        blob = os.urandom(a.file_kb << 10)
        for i in range(a.files):
            sub = folder / f"{i // 1000:05d}"
            if i % 1000 == 0:
                sub.mkdir(parents=True)
            (sub / f"{i}.jpg").write_bytes(blob)
        t = time.perf_counter()
        n, size = folder_stats(folder)
        s = time.perf_counter() - t
        print(f"count + bytes of {n} files ({size / 1e6:.0f} MB): {s:.2f} s ({n / s:.0f} files/s)")
    print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
