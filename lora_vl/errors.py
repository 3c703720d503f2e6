"""The kit's one error policy for bad input.

A bad input — a recipe key, a data record, an image, a model id, an adapter folder, a suite — is
an `InputError` (or a subclass) whose message names the file / record / key / module and what
was expected. `lora_vl.cli` prints it as one line and exits with status 2, with no traceback
unless `--debug` is given or LORA_VL_DEBUG=1. Anything else is an internal error and keeps its
traceback.
"""
from __future__ import annotations


class InputError(ValueError):
    """Bad input from the user; the message names what is wrong and what was expected."""
