"""`lora-vl push DIR REPO_ID [--results results.json] [--private]`: upload an adapter or exported
checkpoint directory as it is (its README.md is the model card every artifact gets) with
huggingface_hub; `--results` adds the evaluation table of a `lora-vl eval` run to the card first."""
from __future__ import annotations

import argparse
from pathlib import Path

from huggingface_hub import HfApi, ModelCard, constants

from lora_vl.card import CARD, write_model_card
from lora_vl.errors import InputError
from lora_vl.fetch.hub import hub_errors
from lora_vl.handoff import read_json_file, read_manifest


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lora-vl push", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir", help="an artifact directory of lora_vl (adapter, merge, exported checkpoint)")
    p.add_argument("repo_id", help="hub model repo to create or update, e.g. you/llava-llama2-vl-lora")
    p.add_argument("--results", help="results.json of `lora-vl eval` on this model: put into the card")
    p.add_argument("--private", action="store_true", help="create the repo private")
    return p


def main(argv: list[str]) -> int:
    a = parser().parse_args(argv)
    directory = Path(a.dir)
    manifest = read_manifest(directory)  # one line if DIR is not an artifact of the kit
    if a.results:
        write_model_card(directory, manifest, read_json_file(a.results, "evaluation results"))
    try:
        ModelCard.load(directory / CARD)
    except Exception as e:  # the card parser raises several types; name the file
        raise InputError(f"{directory / CARD}: not a loadable model card ({e})") from e
    if constants.HF_HUB_OFFLINE:
        raise InputError(f"cannot push {directory} to {a.repo_id}: HF_HUB_OFFLINE is set (offline); unset it "
                         "on a machine with network access and HF_TOKEN set to a token with write access")
    api = HfApi()
    with hub_errors("model", a.repo_id):
        api.create_repo(a.repo_id, private=a.private, exist_ok=True)
        info = api.upload_folder(folder_path=str(directory), repo_id=a.repo_id,
                                 commit_message=f"lora_vl {manifest.get('kind', 'artifact')}")
    print(f"pushed {directory} to {getattr(info, 'commit_url', a.repo_id)}")
    return 0
