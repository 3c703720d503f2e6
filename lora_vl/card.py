"""The Hub model card (`README.md`) of an artifact directory, built from its manifest.

YAML front matter in the Hub's schema (`huggingface_hub.ModelCardData`: base_model, library_name,
license, datasets, tags), then where the artifact came from and, when the kit evaluated it, the
results with n, CI and judge — so that uploading the directory as it is gives a proper model page.
Hub ids come from the manifest and the recipe; licences from lora-vl.lock (what `fetch` read on
the Hub); a local base is followed to the hub LM it was composed from.
"""
from __future__ import annotations

import json
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from lora_vl.artifacts import atomic_write_text
from lora_vl.lock import Lock, is_hub_id, read_lock

CARD = "README.md"
TAGS = ["lora_vl", "lora", "qlora", "llava", "vision-language", "safety"]


def _sources(node) -> list[dict]:
    """Every data source (a mapping with `format` and `path`) anywhere in a recipe."""
    if isinstance(node, dict):
        here = [node] if "format" in node and "path" in node else []
        return here + [s for v in node.values() for s in _sources(v)]
    if isinstance(node, list):
        return [s for v in node for s in _sources(v)]
    return []


def hub_datasets(manifest: dict, lock: Lock) -> list[str]:
    """Hub ids of the data an artifact was trained on: named in the recipe, or fetched into the
    local folder the recipe reads."""
    out = []
    for src in _sources(manifest.get("recipe") or {}):
        path = str(src["path"])
        owner = lock.owner_of(path)
        repo = owner[0].repo_id if owner else path if is_hub_id(path) else None
        if repo and repo not in out:
            out.append(repo)
    return out


def hub_base(manifest: dict) -> str | None:
    """The hub model an artifact builds on: its base, or the LM a local base was composed from."""
    recipe = manifest.get("recipe") or {}
    for ref in (manifest.get("base"), manifest.get("base_model"), (recipe.get("model") or {}).get("lm")):
        if not ref:
            continue
        if is_hub_id(str(ref)):
            return str(ref)
        try:  # a local base: the kit's composed Llava names its LM (read here: handoff imports this module)
            lm = (json.loads((Path(str(ref)) / "manifest.json").read_text()).get("compose") or {}).get("lm")
        except (OSError, ValueError, AttributeError):
            continue
        if lm and is_hub_id(lm):
            return lm
    compose_lm = (manifest.get("compose") or {}).get("lm")
    return compose_lm if compose_lm and is_hub_id(compose_lm) else None


def _provenance_rows(manifest: dict) -> list[tuple[str, str]]:
    recipe = manifest.get("recipe") or {}
    model = recipe.get("model") or {}
    rows = [("kind", manifest.get("kind")), ("created", manifest.get("created")),
            ("lora_vl commit", manifest.get("git_commit")), ("base", manifest.get("base")),
            ("LM", model.get("lm") and f"{model['lm']} @ {model.get('lm_revision') or 'unpinned'}"),
            ("vision encoder",
             model.get("vision") and f"{model['vision']} @ {model.get('vision_revision') or 'unpinned'}"),
            ("parents", ", ".join(str(p.get("path", p)) if isinstance(p, dict) else str(p)
                                  for p in manifest.get("parents") or []) or None),
            ("method", manifest.get("method") or recipe.get("method")),
            ("steps", manifest.get("steps")), ("final loss", manifest.get("final_loss"))]
    for src in _sources(recipe):
        rows.append((f"data ({src['format']})", f"{src['path']} @ {src.get('revision') or 'local'}"))
    return [(k, str(v)) for k, v in rows if v not in (None, "")]


def _results_table(results: dict) -> str:
    """The evaluation summary as `lora-vl eval` writes it (results.json 'summary')."""
    lines = ["| category | metric | value | 95% CI | n | judge |", "|---|---|---|---|---|---|"]
    for cat, s in results.get("summary", {}).items():
        lo, hi = s["ci"]
        lines.append(f"| {cat} | {s['metric']} | {s['value']:.3f} | [{lo:.3f}, {hi:.3f}] | {s['n']} | "
                     f"{', '.join(s['judges'])} |")
    return "\n".join(lines)


def is_adapter(directory: Path) -> bool:
    """A PEFT adapter, or an export holding one in adapter/ (beside its base/)."""
    return (directory / "adapter_config.json").is_file() or (directory / "adapter" / "adapter_config.json").is_file()


def holds_model(directory: Path) -> bool:
    return is_adapter(directory) or (directory / "config.json").is_file()


def model_card(directory: Path, manifest: dict, results: dict | None = None, lock: Lock | None = None) -> ModelCard:
    lock = lock if lock is not None else read_lock()
    adapter = is_adapter(directory)
    base = hub_base(manifest)
    locked = lock.get("model", base) if base else None
    data = ModelCardData(base_model=base, library_name="peft" if adapter else "transformers",
                         license=(locked.license if locked and locked.license else "other"),
                         datasets=hub_datasets(manifest, lock) or None, tags=TAGS)
    body = [f"# {directory.name}", "",
            f"A {manifest.get('kind', 'model').replace('_', ' ')} made by lora_vl, a QLoRA "
            "reproduction kit for *How Does Vision-Language Adaptation Impact the Safety of VLMs?* "
            "(ICLR 2025). `manifest.json` beside this card holds the full recipe and provenance.", "",
            "## Provenance", "", "| | |", "|---|---|"]
    body += [f"| {k} | {v.replace('|', '/')} |" for k, v in _provenance_rows(manifest)]
    if results:
        body += ["", "## Evaluation (lora-vl eval)", "", _results_table(results)]
    if adapter:
        body += ["", "## Use", "", "```python", "from peft import PeftModel",
                 "model = PeftModel.from_pretrained(base_model, \"<this repo or directory>\")", "```"]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body) + "\n")


def write_model_card(directory: str | Path, manifest: dict, results: dict | None = None) -> None:
    """Write (replace) the README.md of a directory that holds a model or adapter (PEFT's generic
    template card is replaced); other artifact folders (a toy world, a data set) get none."""
    directory = Path(directory)
    if holds_model(directory):
        atomic_write_text(directory / CARD, str(model_card(directory, manifest, results)))
