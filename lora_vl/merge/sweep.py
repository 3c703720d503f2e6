"""Sweeps: one merged adapter per point of a coefficient grid, plus `sweep.json`.

Evaluation hook: `<output>/sweep.json` is the index an evaluation stage reads. It holds
  {"kind": "merge_sweep", "grid": {key: [values]}, "points": [
     {"name", "path" (absolute adapter dir), "values" {key: value}, "weights" [λ per input],
      "inputs" [names], "method", "base_model"} ...]}
and every point folder is a normal adapter dir whose manifest.json names its parents and
coefficients (plus "sweep": {"index", "values"}).
"""
from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path
from typing import Any

import yaml

from lora_vl.artifacts import atomic_dir, atomic_write_json
from lora_vl.merge.recipe import MergeRecipe
from lora_vl.merge.run import check_output, merge_into, open_inputs
from lora_vl.recipe import RecipeError, apply_override, build, read_yaml

INDEX = "sweep.json"


def parse_sweep_arg(spec: str) -> tuple[str, list[Any]]:
    """'inputs.1.weight=0,0.25,1' or 'weights=[[1,0],[1,1]]' -> (key, values), values parsed as YAML."""
    if "=" not in spec:
        raise RecipeError(f"--sweep {spec!r}: expected KEY=V1,V2,... or KEY=[V1, V2, ...]")
    key, raw = spec.split("=", 1)
    raw = raw.strip()
    values = yaml.safe_load(raw) if raw.startswith("[") else [yaml.safe_load(v) for v in raw.split(",")]
    if not isinstance(values, list) or not values:
        raise RecipeError(f"--sweep {spec!r}: expected a non-empty list of values")
    return key.strip(), values


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The cartesian product of the grid, in key order (last key varies fastest)."""
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def point_name(index: int, values: dict[str, Any]) -> str:
    label = "_".join(f"{k}={json.dumps(v, separators=(',', ':'))}" for k, v in values.items())
    safe = "".join(c if c.isalnum() or c in "._=-,[]" else "-" for c in label)
    return f"p{index:03d}_{safe}"[:120]


def point_recipe(data: dict, values: dict[str, Any], output: Path, where: str) -> MergeRecipe:
    data = copy.deepcopy(data)
    data.pop("sweep", None)
    for key, value in values.items():
        apply_override(data, f"{key}={json.dumps(value)}")
    data["output"] = str(output)
    return build(MergeRecipe, data, where=where)


def run_sweep(data: dict, grid: dict[str, list[Any]], where: str) -> Path:
    """Write every grid point under data['output'] (atomically, as one folder) and the index."""
    base = build(MergeRecipe, {**data, "sweep": {}}, where=where)
    out = check_output(base, replaces="merge_sweep", marker=INDEX)
    points = grid_points(grid)
    recipes = [point_recipe(data, v, out / point_name(i, v), f"{where} (sweep point {v})")
               for i, v in enumerate(points)]  # build all first: a bad point fails before any work
    cache: dict = {}
    index = {"kind": "merge_sweep", "recipe": where, "grid": grid, "points": []}
    with atomic_dir(out, overwrite=base.overwrite) as tmp:
        for i, (values, recipe) in enumerate(zip(points, recipes)):
            files = open_inputs(recipe, cache)
            name = Path(recipe.output).name
            result = merge_into(tmp / name, recipe, files,
                                {"sweep": {"index": i, "values": values, "dir": str(out)}})
            index["points"].append({"name": name, "path": str(Path(recipe.output).resolve()), "values": values,
                                    "weights": recipe.input_weights, "inputs": recipe.input_names,
                                    "method": recipe.method, "base_model": result.config["base_model_name_or_path"]})
        atomic_write_json(tmp / INDEX, index)
    return out


def load_sweep_data(path: str | None, overrides: list[str], sweep_args: list[str]) -> tuple[dict, dict]:
    """Recipe dict with overrides applied, and the grid: recipe `sweep:` keys plus --sweep args."""
    data = read_yaml(path) if path else {}
    for ov in overrides:
        apply_override(data, ov)
    grid = dict(data.get("sweep") or {})
    grid.update(parse_sweep_arg(s) for s in sweep_args)
    return data, grid
