"""Where the local data paths of the recipes come from: hub dataset repos (fetched), or releases
outside the Hub (named, with where to get them). One entry per folder a recipe reads under data/."""
from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass(frozen=True)
class LocalData:
    folder: str                                    # the folder recipes read, e.g. data/VLGuard
    repo_id: str | None = None                     # hub dataset it is fetched from (None: not on the Hub)
    files: tuple[str, ...] = ()                    # files of that repo the recipes need
    unpack: dict[str, str] = field(default_factory=dict)  # archive -> folder (inside `folder`) it unpacks to
    manual: str | None = None                      # where to get it when it is not on the Hub


CATALOG = [
    LocalData("data/LLaVA-Pretrain", "liuhaotian/LLaVA-Pretrain", ("blip_laion_cc_sbu_558k.json", "images.zip"),
              {"images.zip": "images"}),
    LocalData("data/LLaVA-Instruct", "liuhaotian/LLaVA-Instruct-150K", ("llava_v1_5_mix665k.json",)),
    LocalData("data/VLGuard", "ys-zong/VLGuard", ("train.json", "train.zip", "test.json", "test.zip"),
              {"train.zip": "train", "test.zip": "test"}),
    LocalData("data/llava_images", manual="LLaVA-1.5's five image sets, unpacked as coco/train2017, gqa/images, "
              "ocr_vqa/images, textvqa/train_images, vg/VG_100K{,_2} "
              "(see LLaVA's README, 'Visual Instruction Tuning')"),
    LocalData("data/FigStep", manual="git clone https://github.com/ThuCCSLab/FigStep data/FigStep"),
    LocalData("data/MM-SafetyBench", manual="https://github.com/isXinLiu/MM-SafetyBench (questions + images) "
              "unpacked into data/MM-SafetyBench"),
    LocalData("data/SIUO", manual="https://github.com/sinwang20/SIUO (data + images) unpacked into data/SIUO"),
]


def local_data(path: str) -> LocalData | None:
    """The catalog entry whose folder holds `path`."""
    path = os.path.normpath(path)
    for entry in CATALOG:
        folder = os.path.normpath(entry.folder)
        if path == folder or path.startswith(folder + os.sep):
            return entry
    return None
