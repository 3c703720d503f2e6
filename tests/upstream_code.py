"""Run code from the verbatim upstream excerpts in tests/fixtures/upstream/ (line ranges in each SOURCE.md).

The files are not imported: their own imports pull in the rest of their projects (vllm, spacy,
LLaVA's model code). `load_defs` executes only the named top-level (or nested) definitions, in a
namespace that supplies what they use.
"""
from __future__ import annotations

import ast
import functools
from pathlib import Path

UPSTREAM = Path(__file__).parent / "fixtures" / "upstream"
TOKENIZERS = Path(__file__).parent / "fixtures" / "tokenizers"


def _find(tree: ast.AST, name: str) -> ast.stmt:
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name:
            return node
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return node
    raise KeyError(f"{name} not defined in the upstream file")


def load_defs(relpath: str, names: list[str], namespace: dict | None = None) -> dict:
    """{name: object} for definitions `names` of upstream file `relpath` (nested ones too)."""
    tree = ast.parse((UPSTREAM / relpath).read_text())
    ns = dict(namespace or {})
    module = ast.Module(body=[_find(tree, n) for n in names], type_ignores=[])
    exec(compile(ast.fix_missing_locations(module), str(UPSTREAM / relpath), "exec"), ns)
    return {n: ns[n] for n in names}


def literal(relpath: str, name: str):
    """The value of a top-level literal assignment (a prompt string or dict) of an upstream file."""
    return ast.literal_eval(_find(ast.parse((UPSTREAM / relpath).read_text()), name).value)


@functools.lru_cache(maxsize=None)
def _llama2_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(TOKENIZERS), gguf_file="ggml-vocab-llama-spm.gguf")


def llama2_tokenizer(prepend: str = "first"):
    """The real Llama-2 SentencePiece tokenizer (a fresh copy). `prepend="always"` gives every
    text piece after a special token its word-initial '▁', as SentencePiece-era ("legacy")
    Llama tokenizers do; the GGUF conversion's own is "first"."""
    import copy

    from tokenizers import pre_tokenizers

    tok = copy.deepcopy(_llama2_tokenizer())
    if prepend != "first":
        tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=prepend,
                                                                       split=False)
    return tok
