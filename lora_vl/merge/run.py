"""One merge: open the inputs, check them, combine module by module, write adapter + manifest."""
from __future__ import annotations

import functools
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import torch

from lora_vl.artifacts import atomic_dir, atomic_write_json, fingerprint_files
from lora_vl.handoff import MANIFEST, check_output as check_output_folder, make_manifest, same_location, write_manifest
from lora_vl.merge import dense, scratch
from lora_vl.merge.algebra import compress
from lora_vl.merge.io import (CONFIG, WEIGHTS, AdapterFile, LoraFactors, MergeError, adapter_config, write_config,
                              write_weights)
from lora_vl.merge.methods import METHODS
from lora_vl.merge.recipe import MergeRecipe
from lora_vl.merge.schedule import coefficient, layer_index
from lora_vl.models.load import DTYPES

REPORT = "merge_report.json"


@dataclass
class MergeResult:
    config: dict
    modules: dict[str, LoraFactors]
    extra: dict[str, torch.Tensor]
    dtype: torch.dtype
    module_stats: dict[str, dict] = field(default_factory=dict)
    coefficients: dict[str, list[float]] = field(default_factory=dict)


def open_inputs(recipe: MergeRecipe, cache: dict | None = None) -> list[AdapterFile]:
    """Open every input once (a sweep passes a cache so points share the open files)."""
    cache = {} if cache is None else cache
    files = []
    for inp in recipe.inputs:
        key = os.path.realpath(inp.path)
        if key not in cache:
            cache[key] = AdapterFile(inp.path)
        files.append(cache[key])
    return files


def common_base(files: list[AdapterFile]) -> str | None:
    """The inputs' shared base_model_name_or_path (None = unknown, compatible with any)."""
    known = [(f, f.base_model) for f in files if f.base_model]
    for f, base in known[1:]:
        if not same_location(base, known[0][1]):
            raise MergeError(f"{f.path / CONFIG}: base_model_name_or_path {base!r} differs from "
                             f"{known[0][1]!r} in {known[0][0].path / CONFIG}; adapters must share a base model")
    return known[0][1] if known else None


def module_shapes(files: list[AdapterFile]) -> dict[str, tuple[int, int]]:
    """(out, in) of every module in any input, checked equal wherever a module appears twice."""
    shapes: dict[str, tuple[tuple[int, int], Path]] = {}
    for f in files:
        for m in f.modules:
            shape = f.module_shape(m)
            if m in shapes and shapes[m][0] != shape:
                raise MergeError(f"module {m!r}: shape {shape} (out, in) in {f.weights_path} but "
                                 f"{shapes[m][0]} in {shapes[m][1]}; expected the same base model layer")
            shapes.setdefault(m, (shape, f.weights_path))
    return {m: s for m, (s, _) in sorted(shapes.items())}


def module_coefficients(recipe: MergeRecipe, modules: list[str]) -> dict[str, list[float]]:
    layers = [i for i in map(layer_index, modules) if i is not None]
    num_layers = max(layers) + 1 if layers else None
    weights = recipe.input_weights
    return {m: [coefficient(m, w, inp.layer_list, inp.ramp, inp.module_weights, num_layers)
                for inp, w in zip(recipe.inputs, weights)] for m in modules}


def _stats_dict(rank: int, stats) -> dict:
    return {"rank": rank, "rel_error": 0.0, "kept_energy": 1.0} if stats is None else \
        {"rank": rank, "rel_error": stats.rel_error, "kept_energy": stats.kept_energy}


def merge_factors(recipe: MergeRecipe, factors: list[LoraFactors | None], lams: list[float]):
    """An exact factor method, then SVD compression to `rank` if asked for."""
    method = METHODS[recipe.method]
    f = method.combine([(lam, fac) for lam, fac in zip(lams, factors) if fac is not None], **method.values(recipe))
    if f is None or recipe.rank is None or f.rank <= recipe.rank:
        return f, None
    return compress(f, recipe.rank)


def merge_dense(recipe: MergeRecipe, module: str, factors: list[LoraFactors | None], lams: list[float],
                shape: tuple[int, int]):
    """One module of a dense method; a missing module is a zero delta."""
    present = [(i, f) for i, f in enumerate(factors) if f is not None]
    deltas = [f.delta(torch.float32, out=scratch.buffer(f"delta{i}", shape)) if f is not None
              else scratch.buffer(f"delta{i}", shape).zero_() for i, f in enumerate(factors)]
    gens = [dense.module_generator(recipe.seed, module, i) for i in range(len(factors))]
    method = METHODS[recipe.method]
    M = method.combine(deltas, lams, gens, **method.values(recipe))
    del deltas
    total_sq = dense.sum_of_squares(M)
    if total_sq == 0.0:
        return None, None
    rank = recipe.rank or max(f.rank for _, f in present)
    start = torch.cat([f.A.float() for _, f in present]).T  # the inputs' row spaces (see factor_dense)
    return dense.factor_dense(M, rank, recipe.svd, recipe.svd_niter, seed=recipe.seed, start=start,
                              total_sq=total_sq)


def merged_modules(recipe: MergeRecipe, files: list[AdapterFile], shapes: dict[str, tuple[int, int]],
                   result: MergeResult) -> Iterator[tuple[str, LoraFactors]]:
    """Merge module by module, yielding each result as it is made (stats go into `result`).

    The inputs are read lazily per module, so a consumer that writes each module and drops it
    (`merge_into`) holds one module of each input and of the output at a time.
    """
    result.coefficients = module_coefficients(recipe, list(shapes))
    buffers: dict = {}  # dense methods: full-size buffers kept from one module to the next (scratch.py)
    for m, shape in shapes.items():
        lams = result.coefficients[m]
        factors = [f.factors(m) if m in f.modules and lam != 0.0 else None for f, lam in zip(files, lams)]
        if all(f is None for f in factors):
            continue  # every coefficient is zero here: no delta, no module
        if METHODS[recipe.method].dense:
            with scratch.reuse(buffers):
                out, stats = merge_dense(recipe, m, factors, lams, shape)
        else:
            out, stats = merge_factors(recipe, factors, lams)
        del factors
        if out is not None:
            result.module_stats[m] = _stats_dict(out.rank, stats)
            yield m, out


def _extra_source(recipe: MergeRecipe, files: list[AdapterFile]) -> list[tuple[float, AdapterFile]]:
    """Which inputs' modules_to_save copies make the result, with their averaging weights."""
    mode = recipe.modules_to_save
    holders = [(w, f) for w, f in zip(recipe.input_weights, files) if f.extra_keys]
    if mode == "none" or not holders:
        return []
    if mode == "average":
        positive = [(w, f) for w, f in holders if w > 0]
        if not positive:
            raise MergeError(f"modules_to_save='average': no input with a positive weight holds saved modules "
                             f"({', '.join(str(f.path) for _, f in holders)}); name the input to copy them from")
        return positive
    names = recipe.input_names
    idx = int(mode) if mode.isdigit() else names.index(mode) if mode in names else None
    if idx is None or idx >= len(files):
        raise MergeError(f"modules_to_save={mode!r}: expected 'average', 'none', or one of inputs {names}")
    if not files[idx].extra_keys:
        raise MergeError(f"modules_to_save={mode!r}: {files[idx].weights_path} holds no saved modules")
    return [(1.0, files[idx])]


def merge_extra(recipe: MergeRecipe, files: list[AdapterFile], result: MergeResult) -> None:
    """modules_to_save tensors (the projector): weighted average of the chosen inputs' copies."""
    sources = _extra_source(recipe, files)
    keys = sorted({k for _, f in sources for k in f.extra_keys})
    for key in keys:
        have = [(w, f, f.extra(key)) for w, f in sources if key in f.extra_keys]
        ref = have[0][2]
        for _, f, t in have[1:]:
            if t.shape != ref.shape:
                raise MergeError(f"saved module tensor {key!r}: shape {tuple(t.shape)} in {f.weights_path} "
                                 f"but {tuple(ref.shape)} in {have[0][1].weights_path}")
        total = sum(w for w, _, _ in have)
        result.extra[key] = sum(w * t.double() for w, _, t in have) / total
    names = [n for _, f in sources for n in (f.config.get("modules_to_save") or [])]
    result.config["modules_to_save"] = sorted(set(names)) or None


def result_dtype(recipe: MergeRecipe, files: list[AdapterFile]) -> torch.dtype:
    if recipe.dtype != "auto":
        return DTYPES[recipe.dtype]
    dtypes = [f.dtype for f in files]
    return torch.float32 if torch.float32 in dtypes else dtypes[0]


def _begin(recipe: MergeRecipe, files: list[AdapterFile]) -> tuple[MergeResult, str | None]:
    """Checks that need no tensor data, and the saved modules (small) merged first."""
    base = recipe.base_model or common_base(files)
    if recipe.base_model:
        common_base(files)  # an explicit base still requires the inputs to agree
    result = MergeResult({}, {}, {}, result_dtype(recipe, files))
    merge_extra(recipe, files, result)
    return result, base


def _finish(result: MergeResult, files: list[AdapterFile], base: str | None) -> None:
    if not result.module_stats:
        raise MergeError("merge result is empty: every coefficient is zero for every module")
    ranks = {m: s["rank"] for m, s in result.module_stats.items()}
    result.config = adapter_config(files[0].config, ranks, result.config.get("modules_to_save"), base)


def merge(recipe: MergeRecipe, files: list[AdapterFile] | None = None) -> MergeResult:
    """The merged adapter in memory (nothing written; `merge_into` streams to disk instead)."""
    files = files if files is not None else open_inputs(recipe)
    result, base = _begin(recipe, files)
    result.modules = dict(merged_modules(recipe, files, module_shapes(files), result))
    _finish(result, files, base)
    return result


@functools.lru_cache(maxsize=64)
def _weights_sha256(path: str, mtime_ns: int) -> str:
    return fingerprint_files([path])


def parents(recipe: MergeRecipe, files: list[AdapterFile]) -> list[dict]:
    """What each input was and how it was weighted: the provenance part of the manifest."""
    out = []
    for name, inp, w, f in zip(recipe.input_names, recipe.inputs, recipe.input_weights, files):
        wp = str(f.weights_path.resolve())
        out.append({"name": name, "path": str(f.path.resolve()), "weight": w, "layers": inp.layers,
                    "ramp": inp.ramp, "module_weights": inp.module_weights, "base_model": f.base_model,
                    "weights_sha256": _weights_sha256(wp, os.stat(wp).st_mtime_ns)})
    return out


def summary(result: MergeResult) -> dict:
    errs = [s["rel_error"] for s in result.module_stats.values()]
    return {"modules": len(result.module_stats), "max_rank": max(s["rank"] for s in result.module_stats.values()),
            "max_rel_error": max(errs), "mean_rel_error": sum(errs) / len(errs),
            "min_kept_energy": min(s["kept_energy"] for s in result.module_stats.values())}


def merge_into(directory: Path, recipe: MergeRecipe, files: list[AdapterFile],
               extra_fields: dict | None = None) -> MergeResult:
    """Merge and write adapter files + manifest (parents, coefficients) + per-module report into
    `directory`, streaming: each module is written as soon as it is merged, then dropped."""
    result, base = _begin(recipe, files)
    shapes = module_shapes(files)
    directory.mkdir(parents=True, exist_ok=True)
    write_weights(directory / WEIGHTS, merged_modules(recipe, files, shapes, result), list(shapes),
                  result.extra, result.dtype)
    _finish(result, files, base)
    write_config(directory, result.config)
    atomic_write_json(directory / REPORT, {"modules": result.module_stats, "coefficients": result.coefficients})
    manifest = make_manifest("merged_adapter", asdict(recipe), parents=parents(recipe, files),
                             method=recipe.method, base_model=result.config["base_model_name_or_path"],
                             summary=summary(result), **(extra_fields or {}))
    write_manifest(directory, manifest)
    return result


def check_output(recipe: MergeRecipe, replaces: str = "merged_adapter", marker: str = MANIFEST) -> Path:
    """Refuse before any work an output that overlaps an input, or an existing folder that is not
    a previous output of this kind (`replaces`, read from `marker`) replaced with overwrite."""
    inputs = [(f"merge input {name}", inp.path) for name, inp in zip(recipe.input_names, recipe.inputs)]
    return check_output_folder(recipe.output, inputs, command="merge", replaces=(replaces,),
                               overwrite=recipe.overwrite, marker=marker)


def run(recipe: MergeRecipe) -> Path:
    """Merge and write `recipe.output` atomically; returns the output directory."""
    out = check_output(recipe)
    files = open_inputs(recipe)
    with atomic_dir(out, overwrite=recipe.overwrite) as tmp:
        merge_into(tmp, recipe, files)
    return out
