"""Selective fine-tuning: train only the last N transformer blocks and/or named parameters.

The blocks are found without knowing the architecture: the largest `nn.ModuleList` whose
children are all of one class (`model.layers` in Llama, `transformer.h` in GPT-2), so the same
setting works on a causal LM, a sequence classifier and the `ScalarModel` wrapping one.

Patterns (`FreezeConfig.train_modules`) are fnmatch globs on parameter names, tried against the
full name and against every dotted tail of it, so `lm_head.*` also matches inside a wrapper
(`seq_model.lm_head.weight`) and a plain module name such as `model.norm` selects all its
parameters. Tied weights (the tiny models' `lm_head.weight` is `model.embed_tokens.weight`) are
one tensor with two names: it trains if any of its names is selected, and both follow.

Selection only ever freezes: a parameter that was already frozen (e.g. a 4-bit weight) stays so.
"""

from __future__ import annotations

import difflib
import logging
import re
from fnmatch import fnmatchcase

from torch import nn

from rlhf.config.core import ConfigError
from rlhf.config.parts import FreezeConfig
from rlhf.models.adapters import find_peft_model

logger = logging.getLogger(__name__)


def transformer_blocks(model: nn.Module) -> tuple[str, nn.ModuleList] | None:
    """(name, list) of the model's transformer blocks, or None when it has no such list.

    The largest `ModuleList` of same-class modules; among equally long ones the one holding the
    most parameters (the decoder layers, not e.g. a list of per-layer rotary caches).
    """
    best, best_key = None, (0, 0)
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if len({type(child) for child in module}) != 1:
            continue
        key = (len(module), sum(p.numel() for p in module.parameters()))
        if key > best_key:
            best, best_key = (name, module), key
    return best


def apply_freeze(model: nn.Module, cfg: FreezeConfig) -> list[str]:
    """Freeze every parameter of `model` but those `cfg` selects; the sorted trainable names.

    With nothing selected (both settings None) nothing changes. Names are those of
    `model.named_parameters()` (a tied tensor is listed once, under its first name). Raises
    `ConfigError` for a PeftModel (adapters already decide what trains), more layers than the
    model has, a pattern that matches no parameter, or a selection that leaves nothing trainable.
    """
    if find_peft_model(model) is not None:
        raise ConfigError(
            "selective freezing (freeze.train_last_layers / freeze.train_modules) is for "
            "peft.method none; adapters already train only their own weights"
        )
    if cfg.train_last_layers is None and cfg.train_modules is None:
        return _trainable_names(model)

    # Every name of every tensor, tied aliases included, so `lm_head.*` can select the tied head.
    names_by_param: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        names_by_param.setdefault(id(param), []).append(name)
    all_names = [name for names in names_by_param.values() for name in names]
    selected = _block_names(model, cfg.train_last_layers, all_names)
    for pattern in cfg.train_modules or []:
        matched = {name for name in all_names if _matches(name, pattern)}
        if not matched:
            raise ConfigError(
                f"`freeze.train_modules` pattern {pattern!r} matches no parameter; names look like: "
                f"{', '.join(_hints(pattern, all_names))}"
            )
        selected |= matched

    params = {id(param): param for param in model.parameters()}
    for key, names in names_by_param.items():
        chosen = [name for name in names if name in selected]
        if chosen and len(names) > 1:
            logger.info(
                "%s is tied to %s: they train together",
                chosen[0],
                ", ".join(sorted(set(names) - {chosen[0]})),
            )
        if not chosen:
            params[key].requires_grad_(False)
    trainable = _trainable_names(model)
    if not trainable:
        raise ConfigError(
            "the freeze selection leaves no trainable parameter (the selected ones were already frozen)"
        )
    return trainable


def _block_names(model: nn.Module, last: int | None, all_names: list[str]) -> set[str]:
    """The parameter names inside the last `last` transformer blocks."""
    if last is None:
        return set()
    found = transformer_blocks(model)
    if found is None:
        raise ConfigError(
            f"`freeze.train_last_layers` needs transformer blocks, but {type(model).__name__} has no "
            "list of layers; select parameters with `freeze.train_modules` instead"
        )
    list_name, blocks = found
    if last > len(blocks):
        raise ConfigError(
            f"`freeze.train_last_layers` is {last}, but the model has only {len(blocks)} transformer "
            f"blocks ({list_name or 'the model itself'})"
        )
    prefix = f"{list_name}." if list_name else ""
    wanted = tuple(f"{prefix}{index}." for index in range(len(blocks) - last, len(blocks)))
    return {name for name in all_names if name.startswith(wanted)}


def _matches(name: str, pattern: str) -> bool:
    """`pattern` as a glob on `name` or one of its dotted tails, or as a module holding it."""
    parts = name.split(".")
    for start in range(len(parts)):
        tail = ".".join(parts[start:])
        if fnmatchcase(tail, pattern) or tail.startswith(pattern + "."):
            return True
    return False


def _hints(pattern: str, names: list[str], count: int = 5) -> list[str]:
    """A few parameter names to show next to an unmatched pattern: the closest, else the first.

    Layer indices are shown as `*`, so the hints name kinds of weights, not 30 copies of one.
    """
    kinds = list(dict.fromkeys(re.sub(r"\.\d+\.", ".*.", name) for name in names))
    close = difflib.get_close_matches(pattern, kinds, n=count, cutoff=0.3)
    return close or kinds[:count]


def _trainable_names(model: nn.Module) -> list[str]:
    return sorted(name for name, param in model.named_parameters() if param.requires_grad)
