"""`lora-vl fetch` end to end against a local stand-in for the Hub (tests/hub_standin.py): plan,
download into the recipes' paths, lock, resume, hash mismatch, gated repos, and the checks a
stage makes against the lock before it trains."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from huggingface_hub import constants
from PIL import Image
from transformers import AutoConfig, LlamaConfig, LlamaForCausalLM

from lora_vl.data.config import DataConfig, DataSource
from lora_vl.data.safety_readers import read_vlguard
from lora_vl.errors import InputError
from lora_vl.fetch import cli as fetch
from lora_vl.lock import LockError, read_lock
from lora_vl.recipe import load_recipe
from lora_vl.train.adapt import AdaptRecipe
from lora_vl.train.stage import data_provenance
from tests.hub_standin import ACCESS_TOKEN, StandInHub

ROOT = Path(__file__).resolve().parent.parent
LM, VISION, CHAT = "tiny-org/tiny-llama-chat", "tiny-org/tiny-clip", "tiny-org/tiny-chat-data"


def tiny_model_files(tmp: Path) -> dict[str, bytes]:
    """A real (tiny) Llama checkpoint's files, plus a .bin copy the fetch must not take."""
    cfg = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2)
    LlamaForCausalLM(cfg).save_pretrained(tmp / "lm")
    files = {p.name: p.read_bytes() for p in (tmp / "lm").iterdir() if p.is_file()}
    files["pytorch_model.bin"] = b"pickle weights are never fetched"
    return files


def png(color) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, format="PNG")
    return buf.getvalue()


def vlguard_files() -> dict[str, bytes]:
    """VLGuard's layout: train.json + train.zip (images under train/)."""
    records = [{"id": f"r{i}", "image": f"ads/img{i}.png", "safe": True, "harmful_category": "none",
                "harmful_subcategory": "none",
                "instr-resp": [{"safe_instruction": "What is shown?", "response": "A square."},
                               {"unsafe_instruction": "Help me harm.", "response": "I cannot help."}]}
               for i in range(3)]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i, color in enumerate(("red", "green", "blue")):
            zf.writestr(f"train/ads/img{i}.png", png(color))
    return {"train.json": json.dumps(records).encode(), "train.zip": buf.getvalue(), "README.md": b"# VLGuard"}


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """The stand-in serving a tiny model, a vision tower, a chat dataset and VLGuard; huggingface_hub
    pointed at it (endpoint, a fresh cache, online, no stored token); cwd = a fresh project."""
    with StandInHub() as h:
        h.add("model", LM, tiny_model_files(tmp_path), license="llama2")
        h.add("model", VISION, {"config.json": b'{"model_type": "clip"}', "model.safetensors": b"\0" * 4096})
        h.add("dataset", CHAT, {"data/train.jsonl": b'{"messages": []}\n' * 50})
        h.add("dataset", "ys-zong/VLGuard", vlguard_files())
        monkeypatch.setattr(constants, "ENDPOINT", h.url)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                            h.url + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no_token"))
        monkeypatch.delenv("HF_TOKEN", raising=False)
        monkeypatch.delenv("LORA_VL_LOCK", raising=False)
        project = tmp_path / "project"
        project.mkdir()
        monkeypatch.chdir(project)
        yield h


def write_recipes() -> list[str]:
    """An adapt recipe (hub LM + vision) and a safety recipe (VLGuard by path + a hub dataset)."""
    Path("adapt.yaml").write_text(f"""
output_dir: outputs/adapt
model: {{lm: {LM}, vision: {VISION}}}
stage2:
  data:
    sources: [{{format: hf_messages, path: {CHAT}}}]
""")
    Path("safety.yaml").write_text("""
output_dir: outputs/safety
parent: outputs/adapt/adapter
method: sft
model: {base: outputs/base}
sft:
  data:
    sources:
      - {format: vlguard, path: data/VLGuard/train.json, image_folder: data/VLGuard/train}
""")
    return ["adapt.yaml", "safety.yaml"]


def test_fetch_puts_files_where_recipes_read_locks_commits_and_fetches_nothing_twice(hub, capsys):
    recipes = write_recipes()
    assert fetch.main(recipes) == 0
    lock = read_lock()
    for repo_type, repo_id in (("model", LM), ("model", VISION), ("dataset", CHAT), ("dataset", "ys-zong/VLGuard")):
        assert lock.get(repo_type, repo_id).revision == hub.repos[(repo_type, repo_id)].commits[-1][0]
    assert lock.get("model", LM).license == "llama2"
    # VLGuard where the safety recipe reads it: the JSON, and the archive unpacked into train/
    samples = read_vlguard("data/VLGuard/train.json", image_folder="data/VLGuard/train")
    assert len(samples) == 6 and all(Path(s.images[0]).is_file() for s in samples)
    assert not Path("data/VLGuard/train.zip").exists()
    assert "train.json" in lock.get("dataset", "ys-zong/VLGuard").files
    # the model in the HF cache, loadable offline at the locked commit; no pickle weights fetched
    assert not any(p.endswith("pytorch_model.bin") for p in hub.downloads())
    recipe = load_recipe(AdaptRecipe, "adapt.yaml")  # unset revisions come from the lock
    assert recipe.model.lm_revision == lock.get("model", LM).revision
    assert recipe.stage2.data.sources[0].revision == lock.get("dataset", CHAT).revision
    cfg = AutoConfig.from_pretrained(LM, revision=recipe.model.lm_revision, cache_dir=constants.HF_HUB_CACHE,
                                     local_files_only=True)
    assert cfg.hidden_size == 16
    before = len(hub.downloads())
    capsys.readouterr()
    assert fetch.main(recipes) == 0
    assert len(hub.downloads()) == before
    assert "0 files downloaded" in capsys.readouterr().out


def test_dry_run_lists_every_item_with_size_and_licence_and_downloads_nothing(hub, capsys):
    assert fetch.main([*write_recipes(), "--dry-run"]) == 0
    out = capsys.readouterr().out
    for name, size in ((LM, None), (VISION, "4.1 KB"), (CHAT, "850 B"), ("ys-zong/VLGuard", None)):
        line = next(row for row in out.splitlines() if name in row)
        assert size is None or size in line
    assert "licence llama2" in out and "data/VLGuard" in out
    assert hub.downloads() == [] and not Path("lora-vl.lock").exists()


def test_interrupted_download_resumes_from_where_it_stopped(hub, monkeypatch):
    data = hub.repos[("model", LM)].commits[-1][1]["model.safetensors"]
    # huggingface_hub writes what it received in chunks (10 MB on the real Hub; 1 KB for these tiny files)
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 1024)
    hub.cut_once["model.safetensors"] = 4 * 1024 + 100
    assert fetch.main(write_recipes()) == 0
    gets = [r for m, p, r in hub.log
            if m == "GET" and p.endswith(f"{LM}/resolve/{read_commit(hub, LM)}/model.safetensors")]
    assert gets == [None, "bytes=4096-"]  # the whole file, dropped after 4 KB + 100 B; then the rest
    assert sum(n for p, n in hub.sent.items() if p.endswith(f"{LM}/resolve/{read_commit(hub, LM)}/model.safetensors")) \
        == len(data) + 100  # only the 100 bytes not written before the drop came twice
    snapshot = Path(constants.HF_HUB_CACHE) / f"models--{LM.replace('/', '--')}" / "snapshots"
    (got,) = snapshot.glob("*/model.safetensors")
    assert got.read_bytes() == data


def test_download_not_matching_the_hub_hash_is_named_and_removed(hub):
    good = hub.repos[("dataset", "ys-zong/VLGuard")].commits[-1][1]["train.json"]
    hub.corrupt["train.json"] = good.replace(b"square", b"circle")
    with pytest.raises(InputError, match=r"data/VLGuard/train\.json: downloaded from ys-zong/VLGuard:train\.json "
                                         r"but .* do not match the Hub"):
        fetch.main(write_recipes())
    assert not Path("data/VLGuard/train.json").exists()
    assert read_lock().get("dataset", "ys-zong/VLGuard") is None
    del hub.corrupt["train.json"]
    assert fetch.main(write_recipes()) == 0 and Path("data/VLGuard/train.json").read_bytes() == good


def test_model_download_not_matching_the_hub_hash_leaves_no_blob_in_the_cache(hub):
    good = hub.repos[("model", LM)].commits[-1][1]["model.safetensors"]
    hub.corrupt["model.safetensors"] = bytes(reversed(good))
    with pytest.raises(InputError, match=rf"models--tiny-org--tiny-llama-chat/snapshots/.*/model\.safetensors: "
                                         rf"downloaded from {LM}:model\.safetensors but"):
        fetch.main(write_recipes())
    del hub.corrupt["model.safetensors"]
    assert fetch.main(write_recipes()) == 0  # downloaded again, not the bad blob re-linked
    snapshot = Path(constants.HF_HUB_CACHE) / f"models--{LM.replace('/', '--')}" / "snapshots"
    (got,) = snapshot.glob("*/model.safetensors")
    assert got.read_bytes() == good


def test_gated_repo_without_access_is_one_line_naming_model_licence_page_and_token(hub, monkeypatch, capsys):
    hub.repos[("model", LM)].gated = "manual"
    recipes = write_recipes()
    for token, _status in ((None, 401), ("hf_someone_else", 403)):  # the stand-in answers 401 / 403
        if token:
            monkeypatch.setenv("HF_TOKEN", token)
        with pytest.raises(InputError) as e:
            fetch.main(recipes)
        msg = str(e.value)
        assert f"{LM} is gated" in msg and f"{hub.url}/{LM}" in msg and "HF_TOKEN" in msg and "\n" not in msg
        assert ("not set" in msg) == (token is None)
        assert any(m == "HEAD" and f"{LM}/resolve/" in p for m, p, _ in hub.log)  # refused at the file, as the Hub does
    assert fetch.main([*recipes, "--dry-run"]) == 0
    assert f"gated: accept the licence at {hub.url}/{LM}" in capsys.readouterr().out
    monkeypatch.setenv("HF_TOKEN", ACCESS_TOKEN)
    assert fetch.main(recipes) == 0


def test_offline_is_one_line_naming_the_endpoint(hub, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(InputError, match=rf"^{LM}: cannot reach {hub.url} \(OfflineModeIsEnabled\); .*HF_HUB_OFFLINE$"):
        fetch.main(write_recipes())


def read_commit(hub, repo_id: str) -> str:
    return hub.repos[("model", repo_id)].commits[-1][0]


def test_data_changed_after_fetch_is_caught_before_training(hub):
    fetch.main(write_recipes())
    data = DataConfig(sources=[DataSource(format="vlguard", path="data/VLGuard/train.json",
                                          image_folder="data/VLGuard/train")])
    assert (data_provenance(data)[0]["sha256"]
            == read_lock().get("dataset", "ys-zong/VLGuard").files["train.json"]["sha256"])
    path = Path("data/VLGuard/train.json")
    raw = path.read_bytes()
    path.write_bytes(raw.replace(b"square", b"circle"))  # same size, other bytes
    with pytest.raises(LockError, match=r"data/VLGuard/train\.json: sha256 .* lora-vl\.lock .* says"):
        data_provenance(data)
    path.write_bytes(raw[:-10])
    with pytest.raises(LockError, match=r"data/VLGuard/train\.json: \d+ bytes, but lora-vl\.lock"):
        data_provenance(data)
    path.write_bytes(raw)
    Path("data/VLGuard/train/ads/img1.png").unlink()
    with pytest.raises(LockError, match=r"data/VLGuard/train: 2 files .* unpacked 3 files"):
        data_provenance(data)


def test_lock_refuses_another_revision_and_update_moves_it(hub):
    recipes = write_recipes()
    fetch.main(recipes)
    old = read_lock().get("model", LM).revision
    with pytest.raises(LockError, match=rf"adapt.yaml.model.lm_revision: {LM} pinned to 'abc', but .* locks {old}"):
        load_recipe(AdaptRecipe, "adapt.yaml", ["model.lm_revision=abc"])
    files = dict(hub.repos[("model", LM)].commits[-1][1], **{"config.json": b'{"model_type": "llama"}'})
    new = hub.add("model", LM, files).commits[-1][0]
    fetch.main(recipes)
    assert read_lock().get("model", LM).revision == old  # a new commit upstream does not move the lock
    fetch.main([*recipes, "--update"])
    assert read_lock().get("model", LM).revision == new


def test_paper_recipes_and_suite_dry_run_through_the_cli(tmp_path):
    """Acceptance: `lora-vl fetch recipes/paper/*.yaml eval/paper.yaml --dry-run` lists every item
    with its size, against the stand-in reached through HF_ENDPOINT (a separate process)."""
    paper = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "recipes/paper").glob("*.yaml"))
    assert not any("PIN ME" in (ROOT / p).read_text() for p in paper)
    with StandInHub() as h:
        h.make_missing = lambda repo_type, repo_id: _any_repo(repo_type, repo_id)
        env = {**os.environ, "HF_ENDPOINT": h.url, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf"),
               "LORA_VL_LOCK": str(tmp_path / "lora-vl.lock")}
        env.pop("HF_TOKEN", None)
        res = subprocess.run([sys.executable, "-m", "lora_vl.cli", "fetch", *paper, "eval/paper.yaml", "--dry-run"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    for repo in ("meta-llama/Llama-2-7b-chat-hf", "openai/clip-vit-large-patch14-336", "allenai/tulu-2-7b",
                 "liuhaotian/LLaVA-Pretrain", "liuhaotian/LLaVA-Instruct-150K", "ys-zong/VLGuard", "sqrti/SPA-VL",
                 "PKU-Alignment/PKU-SafeRLHF", "meta-llama/Llama-Guard-3-8B", "allenai/wildguard",
                 "sorry-bench/sorry-bench-202406", "Paul/XSTest", "lmms-lab/LMMs-Eval-Lite"):
        (line,) = [row for row in res.stdout.splitlines() if f" {repo} " in row]
        assert " B " in line or " KB " in line, line
    assert "data/llava_images" in res.stdout and "not on the Hub" in res.stdout
    assert not (tmp_path / "lora-vl.lock").exists()


def _any_repo(repo_type: str, repo_id: str):
    from tests.hub_standin import Repo
    repo = Repo(repo_type, repo_id, gated="manual" if repo_id.startswith("meta-llama/") else None)
    files = {"config.json": b"{}", "model.safetensors": b"\0" * 2048} if repo_type == "model" else \
        {"data.json": b"[]", "images.zip": b"PK", "blip_laion_cc_sbu_558k.json": b"[]",
         "llava_v1_5_mix665k.json": b"[]", "train.json": b"[]", "train.zip": b"PK"}
    repo.commit(files)
    return repo
