"""`rlhf <command>`: the entry point. Heavy libraries are imported only by the command that runs."""

from __future__ import annotations

import argparse
import json
import sys

from rlhf import __version__
from rlhf.cli.common import add_config_args, add_set_arg, quiet_libraries, resolve_config, run_guarded

# Stages the toolkit is built around, in pipeline order. A stage whose module has not landed yet
# is still listed, so `rlhf --help` shows the whole loop, and says plainly that it is not here.
PENDING_STAGES = {
    "sft": "supervised and instruction fine-tuning (full, LoRA, QLoRA, prompt tuning)",
    "generate": "sample completions for prompts (candidates for human feedback)",
    "label": "the labeling web app for collecting human feedback",
    "reward": "train a reward model on comparisons, rankings, ratings or labels",
    "score": "score completions with a reward model",
    "ppo": "optimize the policy against the reward with PPO and a KL penalty",
    "dpo": "direct preference optimization and its relatives",
    "rrhf": "rank responses to align with human feedback",
    "eval": "evaluate policies and reward models",
    "pipeline": "run the whole loop, stage by stage, in one run directory",
}


def _cmd_demo(args: argparse.Namespace) -> None:
    from rlhf.demo import DemoConfig, run_demo

    cfg = resolve_config(DemoConfig, args)
    if cfg is not None:
        quiet_libraries()
        run_demo(cfg)


def _cmd_data_inspect(args: argparse.Namespace) -> None:
    from rlhf.config import DataConfig
    from rlhf.config.core import from_dict, merge, parse_overrides
    from rlhf.data import inspect_data

    # Inspection lists every bad row (skip) unless the user asks it to stop at the first.
    fields = {"path": args.file, "on_error": "skip"}
    if args.format:
        fields["format"] = args.format
    cfg = from_dict(
        DataConfig, merge({"data": fields}, parse_overrides(args.overrides))["data"], prefix="data"
    )
    print(inspect_data(cfg))


def _cmd_data_formats(args: argparse.Namespace) -> None:
    from rlhf.data import format_table

    print(format_table())


def _cmd_env(args: argparse.Namespace) -> None:
    from rlhf.tracking import environment_info

    print(json.dumps(environment_info(), indent=2))


def _pending(name: str):
    def run(args: argparse.Namespace) -> None:
        print(
            f"error: `rlhf {name}` ({PENDING_STAGES[name]}) is not in this version of rlhf yet; "
            "see the README's stage list for what is available",
            file=sys.stderr,
        )
        raise SystemExit(2)

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlhf",
        description="Reinforcement learning from human feedback: SFT, feedback, reward model, PPO.",
        epilog="Each stage: rlhf <stage> --config FILE.yaml --set key=value ... (--print-config shows every field).",
    )
    parser.add_argument("--version", action="version", version=f"rlhf {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>")

    for name, help_text in PENDING_STAGES.items():
        stage = sub.add_parser(name, help=f"{help_text} [not yet available]", description=help_text)
        add_config_args(stage)
        stage.set_defaults(func=_pending(name))

    demo = sub.add_parser("demo", help="the end-to-end demo: runs every stage available, offline, on CPU")
    add_config_args(demo)
    demo.set_defaults(func=_cmd_demo)

    data = sub.add_parser("data", help="inspect data files: detected format, counts, a normalized example")
    data_sub = data.add_subparsers(dest="data_command", metavar="<action>", required=True)
    inspect = data_sub.add_parser("inspect", help="detect a file's format and show counts and one example")
    inspect.add_argument("file", help="a .jsonl/.json/.csv/.parquet file, a `datasets` directory or a hub id")
    inspect.add_argument("--format", help="skip detection and read the file as this format")
    add_set_arg(inspect, "data.rating_scale=[1,7] data.on_error=raise")
    inspect.set_defaults(func=_cmd_data_inspect)
    formats = data_sub.add_parser("formats", help="list the formats the loaders understand")
    formats.set_defaults(func=_cmd_data_formats)

    env = sub.add_parser("env", help="print versions and devices (paste it into bug reports)")
    env.set_defaults(func=_cmd_env)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    return run_guarded(lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
