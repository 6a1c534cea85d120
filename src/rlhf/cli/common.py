"""What every stage command shares: `--config`, `--set`, `--print-config`, and one-line errors."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

from rlhf.config.core import ConfigError, load_config, render_config

T = TypeVar("T", bound="DataclassInstance")


def add_set_arg(parser: argparse.ArgumentParser, example: str) -> None:
    """`--set KEY=VALUE ...` (repeatable) into `args.overrides`."""
    parser.add_argument(
        "--set",
        dest="overrides",
        metavar="KEY=VALUE",
        nargs="+",
        action="extend",
        default=[],
        help=f"override config fields, e.g. --set {example} (values are YAML)",
    )


def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="FILE", help="YAML config file (any field not given keeps its default)"
    )
    add_set_arg(parser, "optimizer.lr=1e-4 peft.method=lora")
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved config with every field's documentation, then exit",
    )


def add_resume_arg(parser: argparse.ArgumentParser) -> None:
    """`--resume [CHECKPOINT]` into `args.resume`: True (the newest checkpoint), a path, or None;
    `--overwrite` into `args.overwrite`: start afresh where an earlier run left checkpoints."""
    start = parser.add_mutually_exclusive_group()
    start.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        metavar="CHECKPOINT",
        help="continue from the newest checkpoint in output_dir (or from CHECKPOINT)",
    )
    start.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh in a output_dir that holds an earlier run's checkpoints, deleting "
        "them (without it, such a run is refused)",
    )


def add_shortcut_overrides(args: argparse.Namespace, flags: tuple[tuple[str, str], ...]) -> None:
    """Turn convenience flags (argparse dest -> config key) into `--set` overrides given last, so
    they win over --config and --set. Values go in as JSON, which YAML reads back unchanged (a path
    like `on` stays a string). Flags left unset (None) change nothing."""
    given = [(key, getattr(args, dest)) for dest, key in flags if getattr(args, dest, None) is not None]
    args.overrides = [*args.overrides, *(f"{key}={json.dumps(value)}" for key, value in given)]


def resolve_config(cls: type[T], args: argparse.Namespace) -> T | None:
    """Build the config from the arguments; print it and return None under `--print-config`."""
    cfg = load_config(cls, args.config, args.overrides)
    if args.print_config:
        print(render_config(cfg))
        return None
    return cfg


def quiet_libraries() -> None:
    """Keep the terminal for our own progress bars: no per-file bars or notices from transformers."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    # peft still calls a transformers property that warns of its renaming on every adapter load.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


USER_ERRORS = (
    ("rlhf.models.adapters", "AdapterError"), ("rlhf.models.load", "ModelLoadError"),
    ("rlhf.training.checkpoint", "CheckpointError"), ("rlhf.rewards.sources", "RewardSourceError"),
    ("rlhf.label.store", "StoreError"),
    ("rlhf.label.tasks", "AnswerError"), ("rlhf.label.export", "ExportError"),
    ("rlhf.engines", "EngineError"), ("rlhf.engines.weights", "UnsupportedAdapterError"),
    ("rlhf.training.guards", "NonFiniteError"), ("rlhf.models.finite", "NonFiniteWeightsError"),
)  # fmt: skip
"""Error classes of modules that may not be imported: a module that never loaded raised nothing."""


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that describe a user's mistake: shown as one line, never as a traceback."""
    from rlhf.data.errors import DataError

    errors: list[type[BaseException]] = [ConfigError, DataError, OSError]
    for module, name in USER_ERRORS:
        if module in sys.modules:  # importing the rest (torch, transformers) would cost seconds
            errors.append(getattr(sys.modules[module], name))
    return tuple(errors)


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def run_guarded(fn: Callable[[], Any]) -> int:
    """Run `fn`; turn user errors and a full disk into `error: <one line>` on stderr and exit status 2."""
    try:
        fn()
    except Exception as err:
        from rlhf.files import DiskFullError, is_disk_full

        if is_disk_full(err) and not isinstance(err, DiskFullError):
            # met where no `writing(path)` names the file (an OSError says it when it knows it)
            where = f" writing {err.filename}" if isinstance(err, OSError) and err.filename else ""
            print(f"error: no space left on device{where}", file=sys.stderr)
            return 2
        if not isinstance(err, user_errors()):
            raise
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
