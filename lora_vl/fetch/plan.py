"""What a set of recipes and evaluation suites needs from outside: one `Item` per hub repo or
local data folder, found by walking the loaded recipe (hub references are the fields declared
with `pins=`; local data is every path under a folder of the catalog)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from lora_vl.errors import InputError
from lora_vl.evaluation.suite import Suite
from lora_vl.fetch.catalog import LocalData, local_data
from lora_vl.lock import hub_refs
from lora_vl.plan.workload import recipe_kind
from lora_vl.recipe import load_recipe
from lora_vl.train.adapt import AdaptRecipe
from lora_vl.train.safety import SafetyRecipe

RECIPE_CLASSES = {"suite": Suite, "adapt": AdaptRecipe, "safety": SafetyRecipe}
# weights only from safetensors: the other formats a model repo carries are not fetched
MODEL_FILES = ("*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken")
MODEL_SKIP = ("original/*",)


@dataclass
class Item:
    repo_type: str                      # "model" | "dataset"
    repo_id: str | None                 # None: not on the Hub (`manual` says where to get it)
    revision: str | None = None         # what a recipe pins (None: the lock, else the default branch)
    local_dir: str | None = None        # None: the Hugging Face cache (what from_pretrained reads)
    files: tuple[str, ...] = MODEL_FILES
    skip: tuple[str, ...] = ()
    unpack: dict[str, str] = field(default_factory=dict)
    manual: str | None = None
    needed_by: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.repo_id or self.local_dir or "?"


def _strings(node, where: str):
    """(key, value) of every string in a loaded recipe."""
    if dataclasses.is_dataclass(node):
        for f in dataclasses.fields(node):
            yield from _strings(getattr(node, f.name), f"{where}.{f.name}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _strings(v, f"{where}[{i}]")
    elif isinstance(node, str):
        yield where, node


def _from_catalog(entry: LocalData) -> Item:
    if entry.repo_id is None:
        return Item("dataset", None, local_dir=entry.folder, files=(), manual=entry.manual)
    return Item("dataset", entry.repo_id, local_dir=entry.folder, files=entry.files, unpack=dict(entry.unpack))


def recipe_items(path: str, overrides: list[str] = ()) -> list[Item]:
    """The items one recipe or suite needs (unpinned: the lock is applied by the fetch)."""
    recipe = load_recipe(RECIPE_CLASSES[recipe_kind(path)], path, list(overrides), pin=False)
    items = []
    for ref in hub_refs(recipe, path):
        files, skip = (MODEL_FILES, MODEL_SKIP) if ref.repo_type == "model" else (("*",), ())
        items.append(Item(ref.repo_type, ref.repo_id, ref.revision, files=files, skip=skip, needed_by=[ref.where]))
    for where, value in _strings(recipe, path):
        entry = local_data(value)
        if entry is not None:
            items.append(dataclasses.replace(_from_catalog(entry), needed_by=[where]))
    return items


def plan_items(paths: list[str], overrides: list[str] = ()) -> list[Item]:
    """The items of several recipes, one per repo/folder (what needs it merged)."""
    merged: dict[tuple, Item] = {}
    for path in paths:
        for item in recipe_items(path, overrides):
            key = (item.repo_type, item.repo_id, item.local_dir)
            have = merged.get(key)
            if have is None:
                merged[key] = item
                continue
            if item.revision and have.revision and item.revision != have.revision:
                raise InputError(f"{item.needed_by[0]}: pins {item.repo_id} to {item.revision}, but "
                                 f"{have.needed_by[0]} pins {have.revision}; one checkout per repo")
            have.revision = have.revision or item.revision
            have.needed_by += item.needed_by
    return list(merged.values())
