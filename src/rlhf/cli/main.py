"""`rlhf <command>`: the entry point. Heavy libraries are imported only by the command that runs."""

from __future__ import annotations

import argparse
import json
import sys
from typing import NoReturn

from rlhf import __version__
from rlhf.cli.common import (
    add_config_args,
    add_resume_arg,
    add_set_arg,
    add_shortcut_overrides,
    quiet_libraries,
    resolve_config,
    run_guarded,
)
from rlhf.cli.label import add_label_parser
from rlhf.cli.report import add_report_parser


def _cmd_sft(args: argparse.Namespace) -> None:
    from rlhf.sft import SftConfig, run_sft

    cfg = resolve_config(SftConfig, args)
    if cfg is not None:
        quiet_libraries()
        run_sft(cfg, resume=args.resume, overwrite=args.overwrite)


def _cmd_reward(args: argparse.Namespace) -> None:
    from rlhf.reward.config import RewardConfig
    from rlhf.reward.train import run_reward

    cfg = resolve_config(RewardConfig, args)
    if cfg is not None:
        quiet_libraries()
        run_reward(cfg, resume=args.resume, overwrite=args.overwrite)


def _cmd_ppo(args: argparse.Namespace) -> None:
    from rlhf.ppo import PpoConfig, run_ppo

    cfg = resolve_config(PpoConfig, args)
    if cfg is not None:
        quiet_libraries()
        run_ppo(cfg, resume=args.resume, overwrite=args.overwrite)


def _cmd_dpo(args: argparse.Namespace) -> None:
    from rlhf.dpo import DpoConfig, run_dpo

    cfg = resolve_config(DpoConfig, args)
    if cfg is not None:
        quiet_libraries()
        run_dpo(cfg, resume=args.resume, overwrite=args.overwrite)


def _cmd_rrhf(args: argparse.Namespace) -> None:
    from rlhf.rrhf import RrhfConfig, run_rrhf

    cfg = resolve_config(RrhfConfig, args)
    if cfg is not None:
        quiet_libraries()
        run_rrhf(cfg, resume=args.resume, overwrite=args.overwrite)


GENERATE_FLAGS = (
    ("model", "model.path"), ("prompts", "data.path"), ("output", "output"),
    ("samples_per_prompt", "samples_per_prompt"), ("seed", "sampling.seed"),
    ("temperature", "sampling.temperature"), ("top_p", "sampling.top_p"), ("top_k", "sampling.top_k"),
    ("max_new_tokens", "sampling.max_new_tokens"), ("stop", "sampling.stop"),
    ("best_of", "best_of"), ("reward_model", "reward.model"),
)  # fmt: skip
SCORE_FLAGS = (
    ("model", "reward.model"), ("data", "data.path"), ("output", "output"), ("batch_size", "reward.batch_size"),
    ("format", "data.format"), ("device", "reward.device"),
)  # fmt: skip


def _cmd_generate(args: argparse.Namespace) -> None:
    from rlhf.generate import GenerateConfig, run_generate

    add_shortcut_overrides(args, GENERATE_FLAGS)
    cfg = resolve_config(GenerateConfig, args)
    if cfg is not None:
        quiet_libraries()
        run_generate(cfg)


def _cmd_score(args: argparse.Namespace) -> None:
    from rlhf.reward.config import ScoreConfig
    from rlhf.reward.run_score import run_score

    add_shortcut_overrides(args, (*SCORE_FLAGS, ("normalize", "normalize")))
    cfg = resolve_config(ScoreConfig, args)
    if cfg is not None:
        quiet_libraries()
        run_score(cfg)


def _cmd_eval_reward(args: argparse.Namespace) -> None:
    from rlhf.reward.config import EvalRewardConfig
    from rlhf.reward.evaluate import run_eval_reward

    add_shortcut_overrides(args, SCORE_FLAGS)
    cfg = resolve_config(EvalRewardConfig, args)
    if cfg is not None:
        quiet_libraries()
        run_eval_reward(cfg)


EVAL_POLICY_FLAGS = (
    ("model", "model.path"), ("baseline", "baseline"), ("reference", "reference"), ("prompts", "data.path"),
    ("reward", "reward.model"), ("gold", "gold"), ("output_dir", "output_dir"), ("limit", "data.limit"),
    ("best_of", "best_of"), ("references", "references"),
)  # fmt: skip


def _cmd_eval_policy(args: argparse.Namespace) -> None:
    from rlhf.eval.config import EvalPolicyConfig
    from rlhf.eval.policy import run_eval_policy

    add_shortcut_overrides(args, EVAL_POLICY_FLAGS)
    cfg = resolve_config(EvalPolicyConfig, args)
    if cfg is not None:
        quiet_libraries()
        run_eval_policy(cfg)


def _cmd_eval_tasks(args: argparse.Namespace) -> None:
    from rlhf.eval.config import EvalTasksConfig
    from rlhf.eval.tasks import run_eval_tasks

    args.models = args.models or None  # none given: the config's
    args.tasks = args.tasks.split(",") if args.tasks else None
    args.names = args.names.split(",") if args.names else None
    args.texts = args.texts.split(",") if args.texts else None
    add_shortcut_overrides(
        args,
        (
            ("models", "models"),
            ("tasks", "tasks"),
            ("names", "names"),
            ("texts", "texts"),
            ("output_dir", "output_dir"),
            ("limit", "limit"),
            ("num_fewshot", "num_fewshot"),
        ),
    )
    cfg = resolve_config(EvalTasksConfig, args)
    if cfg is not None:
        quiet_libraries()
        run_eval_tasks(cfg)


WAITING_STATUS = 3
"""`rlhf pipeline`'s exit status when it stopped to wait for people's judgments (rerun it later)."""


def _cmd_pipeline(args: argparse.Namespace) -> None:
    from rlhf.pipeline.config import PipelineConfig
    from rlhf.pipeline.run import run_pipeline
    from rlhf.report.headline import headline_table

    if args.config_file:
        if args.config:
            raise SystemExit("error: give the config either as CONFIG or as --config, not both")
        args.config = args.config_file
    if args.stages:
        args.overrides = [*args.overrides, f"stages={json.dumps(args.stages.split(','))}"]
    if args.rerun:
        args.overrides = [*args.overrides, f"rerun={json.dumps(args.rerun.split(','))}"]
    cfg = resolve_config(PipelineConfig, args)
    if cfg is not None:
        quiet_libraries()
        summary = run_pipeline(cfg)
        if "waiting" in summary:
            print(f"[pipeline] stopped: {summary['waiting']}")
            raise SystemExit(WAITING_STATUS)
        print(headline_table(summary["headline"]))
        print(f"[pipeline] {summary['run_dir']} in {summary['seconds']:.0f} s; report: {summary['report']}")


def _cmd_demo(args: argparse.Namespace) -> None:
    from rlhf.demo import DemoConfig, run_demo

    add_shortcut_overrides(args, (("seeds", "seeds"),))
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


def _cmd_export(args: argparse.Namespace) -> None:
    quiet_libraries()
    from rlhf.models.export import export_model

    info = export_model(args.source, args.output, merge=args.merge, dtype=args.dtype)
    what = f"{info['adapter']} adapter merged into {info['base']}" if info["merged"] else "re-saved"
    print(
        f"exported {info['source']} -> {info['output']}: {what}, {info['dtype']}, {info['parameters']:,} weights"
    )


def add_score_flags(parser: argparse.ArgumentParser, *, output: str) -> None:
    for flag, kind, metavar, what in (
        ("--model", str, "DIR", "reward.model: the reward model directory"),
        ("--data", str, "FILE", "data.path: the file to read (any format with completions)"),
        ("--output", str, "FILE", output),
        ("--batch-size", int, "N", "reward.batch_size: completions per forward pass"),
        ("--format", str, "NAME", "data.format: skip detection and read the file as this format"),
        ("--device", str, "DEV", "reward.device: cpu, cuda, cuda:1 (default: the GPU when there is one)"),
    ):
        parser.add_argument(flag, type=kind, metavar=metavar, help=f"sets {what}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlhf",
        description="Reinforcement learning from human feedback: SFT, feedback, reward model, PPO.",
        epilog="Each stage: rlhf <stage> --config FILE.yaml --set key=value ... (--print-config shows every field).",
    )
    parser.add_argument("--version", action="version", version=f"rlhf {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>")

    add_label_parser(sub)
    add_report_parser(sub)

    pipeline = sub.add_parser(
        "pipeline",
        help="the whole loop in one run directory: SFT, candidates, feedback, reward, PPO, eval, report",
        description="Run SFT -> candidates -> feedback -> reward model -> PPO -> evaluation -> report in "
        "one run directory; finished stages (outputs there, config unchanged) are skipped on a rerun.",
    )
    pipeline.add_argument("config_file", nargs="?", metavar="CONFIG", help="the pipeline's YAML config")
    add_config_args(pipeline)
    pipeline.add_argument("--stages", metavar="A,B", help="sets stages: run only these (e.g. reward,ppo)")
    pipeline.add_argument("--rerun", metavar="A,B", help="sets rerun: run these again though finished")
    pipeline.set_defaults(func=_cmd_pipeline)

    sft = sub.add_parser(
        "sft",
        help="supervised and instruction fine-tuning (full, LoRA, QLoRA, prompt tuning, selective layers)",
        description="Fine-tune a language model (decoder-only or encoder-decoder) on demonstrations; the model goes to <output_dir>/model.",
    )
    add_config_args(sft)
    add_resume_arg(sft)
    sft.set_defaults(func=_cmd_sft)

    reward = sub.add_parser(
        "reward",
        help="train a reward model on comparisons, rankings, ratings or labels",
        description="Train a scalar reward model r(x, y) on human feedback; the model goes to <output_dir>/model.",
    )
    add_config_args(reward)
    add_resume_arg(reward)
    reward.set_defaults(func=_cmd_reward)

    ppo = sub.add_parser(
        "ppo",
        help="optimize the policy against the reward with PPO and a KL penalty; RLOO, GRPO, REINFORCE",
        description="Reinforcement learning from a reward model, a Python function or an HTTP endpoint; "
        "the policy goes to <output_dir>/policy and the critic to <output_dir>/critic.",
    )
    add_config_args(ppo)
    add_resume_arg(ppo)
    ppo.set_defaults(func=_cmd_ppo)

    dpo = sub.add_parser(
        "dpo",
        help="optimize the policy straight from preference pairs: DPO, conservative DPO, IPO",
        description="Direct preference optimization from comparisons or rankings, against a frozen "
        "reference (the SFT model); the policy goes to <output_dir>/policy.",
    )
    add_config_args(dpo)
    add_resume_arg(dpo)
    dpo.set_defaults(func=_cmd_dpo)

    rrhf = sub.add_parser(
        "rrhf",
        help="rank responses to align with human feedback: ranking hinge + SFT on the best response",
        description="RRHF: K responses per prompt ranked by people or scored by a reward model; the policy "
        "learns to order its length-normalized log-probs the same way; the policy goes to <output_dir>/policy.",
    )
    add_config_args(rrhf)
    add_resume_arg(rrhf)
    rrhf.set_defaults(func=_cmd_rrhf)

    generate = sub.add_parser(
        "generate",
        help="sample completions for prompts (candidates for human feedback)",
        description="Sample K completions for every prompt of a file and write them as `candidates` JSONL "
        "(prompt, completions, rendered_prompt, source), the input of the labeling app.",
    )
    add_config_args(generate)
    for flag, kind, metavar, what in (
        ("--model", str, "PATH", "model.path: hub id, directory or builtin:tiny"),
        ("--prompts", str, "FILE", "data.path: the prompts file (any format with prompts)"),
        ("--output", str, "FILE", "output: the JSONL file to write"),
        ("--samples-per-prompt", int, "K", "samples_per_prompt: completions per prompt"),
        ("--seed", int, "N", "sampling.seed: same seed, same completions"),
        ("--temperature", float, "T", "sampling.temperature (0: greedy)"),
        ("--top-p", float, "P", "sampling.top_p (1: off)"),
        ("--top-k", int, "K", "sampling.top_k (0: off)"),
        ("--max-new-tokens", int, "N", "sampling.max_new_tokens"),
        ("--best-of", int, "N", "best_of: keep the best of N draws per prompt (SFT rows out)"),
        ("--reward-model", str, "DIR", "reward.model: the reward model that picks the best of N"),
    ):
        generate.add_argument(flag, type=kind, metavar=metavar, help=f"sets {what}")
    generate.add_argument(
        "--stop",
        action="append",
        metavar="STR",
        help="sets sampling.stop (repeatable): end a completion before this text; "
        "taken literally, so in bash write a newline as $'\\n'",
    )
    generate.set_defaults(func=_cmd_generate)

    score = sub.add_parser(
        "score",
        help="score completions with a reward model (JSONL out)",
        description="Add a reward model's score to every completion of a file: prompt/completion rows, "
        "candidates from `rlhf generate`, comparisons, rankings, ratings or labels.",
    )
    add_config_args(score)
    add_score_flags(score, output="output: the JSONL file to write (default scores.jsonl)")
    score.add_argument(
        "--normalize", action="store_true", default=None,
        help="sets normalize: (r - mean) / std with the statistics saved with the model",
    )  # fmt: skip
    score.set_defaults(func=_cmd_score)

    evaluate = sub.add_parser("eval", help="evaluate reward models and policies")
    eval_sub = evaluate.add_subparsers(dest="eval_command", metavar="<what>", required=True)
    eval_reward = eval_sub.add_parser(
        "reward",
        help="held-out accuracy, per-position accuracy, margin, calibration and reward distribution",
        description="How well a reward model agrees with held-out feedback (comparisons, rankings, "
        "ratings or labels).",
    )
    add_config_args(eval_reward)
    add_score_flags(eval_reward, output="output: also write every metric to this JSON file")
    eval_reward.set_defaults(func=_cmd_eval_reward)
    eval_policy = eval_sub.add_parser(
        "policy",
        help="a policy against a baseline: reward and gold scores, win rate with its interval, KL, lengths",
        description="Answer held-out prompts with the policy and a baseline; score, compare, measure KL.",
    )
    add_config_args(eval_policy)
    for flag, kind, metavar, what in (
        ("--model", str, "DIR", "model.path: the policy"),
        ("--baseline", str, "DIR", "baseline: the policy to compare with (e.g. the SFT model)"),
        ("--reference", str, "DIR", "reference: the KL reference (default: the baseline)"),
        ("--prompts", str, "FILE", "data.path: held-out prompts"),
        ("--reward", str, "DIR", "reward.model: a reward model that scores every answer"),
        ("--gold", str, "MODULE:FN", "gold: a gold scoring function fn(prompts, completions)"),
        ("--output-dir", str, "DIR", "output_dir: where eval.json and samples.jsonl go"),
        ("--limit", int, "N", "data.limit: the first N prompts only"),
        ("--best-of", int, "N", "best_of: the policy answers with the best of N samples"),
        (
            "--references",
            str,
            "FILE",
            "references: reference answers (ROUGE, exact match), matched by prompt",
        ),
    ):
        eval_policy.add_argument(flag, type=kind, metavar=metavar, help=f"sets {what}")
    eval_policy.set_defaults(func=_cmd_eval_policy)
    eval_tasks = eval_sub.add_parser(
        "tasks",
        help="benchmark tasks through lm-evaluation-harness, several models side by side",
        description="Run lm-evaluation-harness tasks (registry names, or local task YAML files that run "
        "offline) on each model and print one table of task x model with the difference to the first.",
    )
    add_config_args(eval_tasks)
    eval_tasks.add_argument(
        "models", nargs="*", metavar="MODEL", help="sets models: model, adapter or run directories"
    )
    for flag, kind, metavar, what in (
        ("--tasks", str, "T1,T2", "tasks: task names or local task files, comma-separated"),
        ("--names", str, "N1,N2", "names: a name per model for the table"),
        ("--texts", str, "F1,F2", "texts: held-out text files, each model's language-modelling loss on them"),
        ("--output-dir", str, "DIR", "output_dir: where tasks.json and each model's results go"),
        ("--limit", int, "N", "limit: the first N documents of each task only"),
        ("--num-fewshot", int, "K", "num_fewshot: examples shown before each question"),
    ):
        eval_tasks.add_argument(flag, type=kind, metavar=metavar, help=f"sets {what}")
    eval_tasks.set_defaults(func=_cmd_eval_tasks)

    demo = sub.add_parser("demo", help="the end-to-end demo: runs every stage available, offline, on CPU")
    add_config_args(demo)
    demo.add_argument(
        "--seeds", type=int, metavar="N",
        help="sets seeds: the whole demo for N task seeds, and each method's median, quartiles, mean and worst seed",
    )  # fmt: skip
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

    export = sub.add_parser(
        "export",
        help="write a saved model (LoRA merged into its base) for plain transformers",
        description="Load SOURCE (a model or adapter directory, hub id or builtin:tiny) and save it to "
        "OUTPUT, merging a LoRA adapter into the base weights so AutoModelForCausalLM loads it.",
    )
    export.add_argument("source", help="saved model or adapter directory, hub id or builtin:tiny")
    export.add_argument("output", help="directory to write (replaced atomically if it exists)")
    export.add_argument(
        "--merge",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="merge a LoRA adapter into the base (default); --no-merge writes the adapter as an adapter",
    )
    export.add_argument(
        "--dtype", choices=["float32", "bfloat16", "float16"], help="dtype to write (default: the base's own)"
    )
    export.set_defaults(func=_cmd_export)

    env = sub.add_parser("env", help="print versions and devices (paste it into bug reports)")
    env.set_defaults(func=_cmd_env)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return run_guarded(lambda: args.func(args))
    finally:
        close_process_group()


def entry() -> NoReturn:
    """The `rlhf` command as a process (the console script; `python -m rlhf.cli.main` under
    torchrun or accelerate): `main()`, then exit with its status. A process of a distributed launch
    (WORLD_SIZE > 1) exits without interpreter finalization (`leave_now`); `main()` itself never
    does, so it can be called in a process that goes on (tests)."""
    import os

    code = main()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        leave_now(code)
    sys.exit(code)


def close_process_group() -> None:
    """Leave a torchrun/accelerate process group before the interpreter shuts down. Exiting with
    it open leaves gloo's worker threads holding tensors, and their clean-up during interpreter
    finalization can abort the process ("terminate called without an active exception",
    SIGABRT; pytorch/pytorch#190489), failing a run that had finished its work."""
    torch = sys.modules.get("torch")  # a command that never imported torch has no group to close
    if torch is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def leave_now(code: int) -> NoReturn:
    """End a distributed process without interpreter finalization. Even with the group closed,
    C++ threads of DeepSpeed ZeRO-3 and gloo can abort the process while Python tears down its
    objects (SIGABRT, "terminate called without an active exception"; seen once in a CI-like run,
    after a resumed ZeRO-3 PPO run had written its policy). The run's files are written and
    closed by now: flush the streams, run the atexit handlers, and exit with the run's status."""
    import atexit
    import os

    sys.stdout.flush()
    sys.stderr.flush()
    atexit._run_exitfuncs()
    os._exit(code)


if __name__ == "__main__":
    entry()
