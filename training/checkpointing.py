"""Activation checkpointing under the argument name the installed transformers reads.

transformers 5.2x renamed ``TrainingArguments.gradient_checkpointing`` to ``activation_checkpointing``
and warns whenever only the old one is set, which TRL's configs do by default (``True``): once per
config built, in every training run and test. The value stays what it was (ours, or TRL's default).
"""

from __future__ import annotations

import dataclasses
from typing import Any

OLD, NEW = "gradient_checkpointing", "activation_checkpointing"


def with_checkpointing(config_class: type, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` for ``config_class`` with checkpointing given under the name it reads."""
    defaults = {f.name: f.default for f in dataclasses.fields(config_class)}
    if NEW not in defaults:  # an older transformers: the old name is the only one
        return kwargs
    out = dict(kwargs)
    value = out.pop(OLD, defaults.get(OLD))
    out.setdefault(NEW, value)
    return out
