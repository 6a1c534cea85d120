"""Pairs per second, peak memory and held-out implicit-reward accuracy of `rlhf dpo` against TRL's `DPOTrainer`.

    python bench/dpo_vs_trl.py                   # random Llama, planted-word pairs, each side at its defaults
    python bench/dpo_vs_trl.py --repeats 2       # each side twice, alternating; the best run counts
    python bench/dpo_vs_trl.py --trl-precompute  # TRL also computes the reference log-probs once, up front
    python bench/dpo_vs_trl.py --no-cache --no-packing   # rlhf like TRL's defaults: live reference, padded
    python bench/dpo_vs_trl.py --model DIR --data FILE --held-out 200 --steps 100 --lr 1e-6

Each trainer runs in its own subprocess (this script with `--side ours|trl`), one after the other,
so their memory peaks are separate. Both fully fine-tune the same saved causal LM against the same
reference (that starting model) on the same pairs in the same order: DPO's sigmoid loss with the
same beta, `--batch-size` pairs per optimizer step (no accumulation), AdamW with a linear schedule,
no eval, no saving while training. The pairs are tokenized once by rlhf; TRL 1.16's DPOTrainer has
no pre-tokenized input, so it gets the same texts (rendered prompts) and the script checks that its
token ids are rlhf's, sequence by sequence. Each side handles the reference at its default: rlhf
caches the reference log-probs of every pair before its loop (`reference_logps: auto`) and packs
sequences into rows of --max-length; TRL runs its reference model on every step and pads
(`--trl-precompute` turns on its `precompute_ref_log_probs`; `--no-cache` / `--no-packing` put
rlhf on a live reference / padded rows). A reference pass done before the loop is timed and an
end-to-end rate including it is printed next to the loop's rate. Afterwards this script loads
both saved policies with plain transformers and scores held-out pairs against the starting model.
What is timed and counted is in docs/benchmarks.md. Needs `pip install -e .[bench]`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/: the shared probe, the reward bench's data
from common import PairProbe, machine, sequence_counts  # noqa: E402
from reward_vs_trl import encode_pairs, prepare  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SEED = 0
SETUP = ("steps", "batch_size", "max_length", "beta", "lr", "warmup", "skip", "repeats")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=40, help="optimizer steps on each side")
    p.add_argument("--batch-size", type=int, default=16, help="pairs per optimizer step")
    p.add_argument("--max-length", type=int, default=256, help="tokens per sequence (prompt + completion)")
    p.add_argument("--beta", type=float, default=0.1, help="DPO beta on both sides")
    p.add_argument("--lr", type=float, default=2e-5, help="peak learning rate on both sides")
    p.add_argument("--warmup", type=int, default=6, help="warm-up steps of the linear schedule")
    p.add_argument("--skip", type=int, default=5, help="first steps left out of the steady-state rate")
    p.add_argument("--model", help="HF causal LM directory (default: a random Llama built here)")
    p.add_argument("--hidden", type=int, default=256, help="built model: hidden size")
    p.add_argument("--layers", type=int, default=4, help="built model: decoder layers")
    p.add_argument("--vocab", type=int, default=512, help="built model: vocabulary (>= 512)")
    p.add_argument("--data", help="comparisons or rankings in any format rlhf reads (default: generated)")
    p.add_argument("--pairs", type=int, help="generated pairs to train on (default: steps x batch)")
    p.add_argument("--held-out", type=int, default=256, help="held-out pairs (generated) or records (--data)")
    p.add_argument("--repeats", type=int, default=1, help="runs per side, alternating; the best one counts")
    p.add_argument("--gradient-checkpointing", action="store_true", help="on both sides")
    p.add_argument("--threads", type=int, help="torch threads in each run (default: torch's choice)")
    p.add_argument(
        "--cache", action=argparse.BooleanOptionalAction, default=True,
        help="rlhf's reference log-probs: `auto` (its default: cached before the loop when the run covers "
        "the data once); --no-cache: `live`, the reference runs on every step like TRL's default",
    )  # fmt: skip
    p.add_argument(
        "--packing", action=argparse.BooleanOptionalAction, default=True,
        help="rlhf packs each step's sequences into rows of --max-length (its default); --no-packing pads "
        "one sequence per row like TRL",
    )  # fmt: skip
    p.add_argument(
        "--trl-precompute", action="store_true",
        help="TRL's precompute_ref_log_probs=True: reference log-probs of the whole set before training "
        "(default: off, TRL's default, its reference model runs on every step)",
    )  # fmt: skip
    p.add_argument("--out", default=str(ROOT / "bench/results/dpo_vs_trl.json"), help="results JSON")
    p.add_argument("--side", choices=["ours", "trl"], help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    return p.parse_args(argv)


# --------------------------------------------------------------------------- measurement (children)


def run_ours(args) -> dict:
    from rlhf.config import load_config
    from rlhf.dpo import DpoConfig, run_dpo
    from rlhf.training.loop import watch_steps

    # The training steps' own micro-batches are counted (the packing check and the reference pass
    # are not steps of the loop, and there is no eval here).
    probe = PairProbe(count=sequence_counts)
    overrides = [
        f"model.path={args.model}", f"data.path={args.data}", f"data.max_length={args.max_length}",
        f"model.gradient_checkpointing={str(args.gradient_checkpointing).lower()}",
        "prompt.template=raw",  # the data file holds rendered prompts already
        f"packing={str(args.packing).lower()}", f"reference_logps={'auto' if args.cache else 'live'}",
        f"batch_size={args.batch_size}", f"max_steps={args.steps}", "loss_type=sigmoid", f"beta={args.beta}",
        f"optimizer.lr={args.lr}", "optimizer.scheduler=linear", f"optimizer.warmup_steps={args.warmup}",
        "optimizer.warmup_ratio=0", "optimizer.weight_decay=0", "optimizer.max_grad_norm=1.0", f"seed={SEED}",
        f"output_dir={Path(args.result).with_suffix('')}", "logging.progress=false",
        "logging.tensorboard=false",
    ]  # fmt: skip
    with watch_steps(probe):
        summary = run_dpo(load_config(DpoConfig, None, overrides)).summary
    losses, accuracy = summary["train_loss"], summary["train_accuracy"]
    keys = ("pairs_per_second", "train_seconds", "train_pairs", "reference_logps", "reference_seconds",
            "packed")  # fmt: skip
    return probe.report(
        args.skip, loss_first=losses[0], loss_last=losses[-1], train_accuracy_last=accuracy[-1],
        model_dir=summary["policy_dir"], reference_logps=summary["reference_logps"],
        reference_seconds=summary["reference_seconds"] if summary["reference_logps"] == "cache" else 0.0,
        reported={k: summary[k] for k in keys},  # run_dpo's own summary
    )  # fmt: skip


def run_trl(args) -> dict:
    import trl.trainer.dpo_trainer as dpo_trainer
    from datasets import Dataset
    from transformers import PrinterCallback, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from rlhf.config.parts import DataConfig, ModelConfig, PromptConfig
    from rlhf.data import PromptRenderer, load_records
    from rlhf.models import load_tokenizer, resolve_dtype
    from rlhf.training.batches import BatchStream

    # The pairs rlhf trains on, in the very order its BatchStream draws them (TRL reads them
    # sequentially), so each step's batch holds the same pairs on both sides. DPOTrainer tokenizes
    # text itself: it gets the rendered prompts and the completions, and its ids are checked below.
    tokenizer = load_tokenizer(ModelConfig(path=args.model), padding_side="right")
    groups = encode_pairs(args.data, tokenizer, args.max_length)
    records = load_records(DataConfig(path=args.data, max_length=args.max_length), expect="reward").records
    renderer = PromptRenderer(PromptConfig(template="raw"), tokenizer)
    assert len(records) == len(groups), "records and rlhf's groups differ"
    stream = iter(BatchStream(len(groups), args.batch_size, seed=SEED))
    order = [i for _ in range(args.steps) for i in next(stream)]
    columns = {
        "prompt": [trl_prompt(renderer.render(records[i].prompt), tokenizer) for i in order],
        "chosen": [records[i].chosen for i in order],
        "rejected": [records[i].rejected for i in order],
    }
    cuda = torch.cuda.is_available()
    config = DPOConfig(
        output_dir=str(Path(args.result).with_suffix("")), max_length=args.max_length,
        model_init_kwargs={"dtype": str(resolve_dtype(ModelConfig().dtype)).removeprefix("torch.")},  # as rlhf
        loss_type=["sigmoid"], beta=args.beta, precompute_ref_log_probs=args.trl_precompute,
        per_device_train_batch_size=args.batch_size, gradient_accumulation_steps=1, max_steps=args.steps,
        train_sampling_strategy="sequential", learning_rate=args.lr, lr_scheduler_type="linear",
        warmup_steps=args.warmup, weight_decay=0.0, max_grad_norm=1.0, seed=SEED, disable_dropout=True,
        bf16=cuda and torch.cuda.is_bf16_supported(), use_cpu=not cuda,  # TRL's default bf16 would apply on CPU too
        activation_checkpointing=args.gradient_checkpointing,  # TRL's default: on
        activation_checkpointing_kwargs={"use_reentrant": False},
        logging_steps=1,  # for the loss of every step (rlhf keeps it anyway)
        save_strategy="no", eval_strategy="no", report_to="none", disable_tqdm=True, dataloader_num_workers=0,
    )  # fmt: skip

    # With precompute_ref_log_probs the reference pass runs inside DPOTrainer.__init__ (and hashes the
    # model first, to name its cache): timed here as TRL's reference seconds.
    spent = {"reference": 0.0}
    real_precompute, real_hash = DPOTrainer._precompute_ref_logps, dpo_trainer.hash_module

    def timed(fn):
        def wrapper(*a, **k):
            started = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent["reference"] += time.perf_counter() - started

        return wrapper

    DPOTrainer._precompute_ref_logps, dpo_trainer.hash_module = timed(real_precompute), timed(real_hash)
    trainer = DPOTrainer(
        model=args.model, args=config, train_dataset=Dataset.from_dict(columns), processing_class=tokenizer
    )
    DPOTrainer._precompute_ref_logps, dpo_trainer.hash_module = real_precompute, real_hash
    check = token_check(trainer.train_dataset, [groups[i] for i in order], args.max_length)

    probe, counted = PairProbe(), []
    real_loss = trainer.compute_loss

    def compute_loss(model, inputs, *a, **k):  # real tokens, padded positions and pairs of every step
        ids = inputs["input_ids"]
        counted.append((int(inputs["attention_mask"].sum()), ids.numel(), ids.shape[0] // 2))
        return real_loss(model, inputs, *a, **k)

    trainer.compute_loss = compute_loss

    class Timing(TrainerCallback):
        def on_train_begin(self, *_, **__):
            probe.start()

        def on_step_end(self, _args, state, *_, **__):
            tokens, padded, pairs = counted[state.global_step - 1]  # one micro-batch per step
            probe.step(tokens, pairs, padded)

        def on_train_end(self, *_, **__):
            probe.end()

    trainer.add_callback(Timing())
    trainer.remove_callback(PrinterCallback)  # the per-step log dicts on stdout; the history keeps them
    trainer.train()
    model_dir = Path(config.output_dir) / "model"
    trainer.save_model(str(model_dir))
    logs = [row for row in trainer.state.log_history if "loss" in row]
    return probe.report(
        args.skip, loss_first=logs[0]["loss"], loss_last=logs[-1]["loss"],
        train_accuracy_last=logs[-1]["rewards/accuracies"], model_dir=str(model_dir),
        reference_logps="cache" if args.trl_precompute else "live",
        reference_seconds=spent["reference"] if args.trl_precompute else 0.0,
        total_train_tokens=trainer._total_train_tokens, tokens_check=check,
        checkpointing=bool(trainer.args.activation_checkpointing), padding_free=trainer.padding_free,
    )  # fmt: skip


def trl_prompt(prompt: str, tokenizer) -> str:
    """The rendered prompt as TRL should get it. A chat template may write BOS into the text, and the
    tokenizer adds one too: rlhf keeps one (`encode_prompt`), TRL would train on both, so the text
    one goes."""
    bos = tokenizer.bos_token
    if bos and prompt.startswith(bos) and tokenizer(prompt)["input_ids"][:2] == [tokenizer.bos_token_id] * 2:
        return prompt[len(bos) :]
    return prompt


def token_check(dataset, groups: list, max_length: int) -> dict:
    """Whether TRL's tokenized pairs are rlhf's, sequence by sequence: the same ids (after TRL's
    collator truncation, which keeps the start) and the same prompt / completion split."""
    if len(dataset) != len(groups):
        raise SystemExit(
            f"TRL dropped {len(groups) - len(dataset)} of {len(groups)} pairs whose prompt alone fills "
            "--max-length (rlhf keeps them, cutting the prompt from the left): raise --max-length"
        )
    same_ids = same_split = 0
    for row, group in zip(dataset, groups):
        for k, name in enumerate(("chosen_ids", "rejected_ids")):
            theirs = (row["prompt_ids"] + row[name])[:max_length]
            same_ids += theirs == group.input_ids[k]
            same_split += len(row["prompt_ids"]) == group.prompt_lens[k]
    sequences = 2 * len(groups)
    if same_ids < sequences or same_split < sequences:
        print(f"warning: TRL's token ids differ from rlhf's in {sequences - same_ids} of {sequences} sequences "
              f"(prompt/completion split in {sequences - same_split})", file=sys.stderr)  # fmt: skip
    return {"sequences": sequences, "same_ids": same_ids, "same_prompt_split": same_split}


# --------------------------------------------------------------------------- held-out check (parent)


def completion_logps(model_dir: str, groups: list, pad_id: int, batch_size: int = 16) -> list[list[float]]:
    """log π(completion | prompt) of every held-out completion (summed over its tokens, EOS included)
    under a saved causal LM loaded with plain transformers, float32, right-padded batches."""
    from transformers import AutoModelForCausalLM

    from rlhf.data.rows import pad_right

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device).eval()
    sequences = [(seq, start) for g in groups for seq, start in zip(g.input_ids, g.prompt_lens)]
    values = []
    with torch.no_grad():
        for begin in range(0, len(sequences), batch_size):
            chunk = sequences[begin : begin + batch_size]
            ids, mask = pad_right([seq for seq, _ in chunk], pad_id)
            ids, mask = ids.to(device), mask.to(device)
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            token = logits.log_softmax(-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)  # predicts t + 1
            target = torch.arange(1, ids.shape[1], device=device).expand_as(token)
            starts = torch.tensor([max(start, 1) for _, start in chunk], device=device).unsqueeze(1)
            keep = (target >= starts) & (mask[:, 1:] == 1)  # completion tokens only
            values += (token * keep).sum(-1).cpu().tolist()
    out, at = [], 0
    for g in groups:
        out.append(values[at : at + len(g.input_ids)])
        at += len(g.input_ids)
    return out


def evaluate(args, result: dict) -> None:
    """Held-out implicit-reward accuracy, margin and DPO loss of one side's saved policy against the
    starting model (rlhf's metric code on log-probs from plain transformers, the same for both)."""
    from rlhf.config.parts import ModelConfig
    from rlhf.dpo import DpoConfig
    from rlhf.dpo.train import preference_metrics
    from rlhf.models import load_tokenizer

    tokenizer = load_tokenizer(ModelConfig(path=args.model), padding_side="right")
    groups = encode_pairs(args.held_out_data, tokenizer, args.max_length)
    if getattr(args, "reference_logps", None) is None:  # the starting model's, once for both sides
        args.start_logps = completion_logps(args.model, groups, tokenizer.pad_token_id)
    policy = completion_logps(result["model_dir"], groups, tokenizer.pad_token_id)
    metrics = preference_metrics(DpoConfig(beta=args.beta), groups, policy, args.start_logps)
    result["held_out"] = {
        k: metrics[k] for k in ("accuracy", "margin", "chosen", "rejected", "loss", "pairs")
    }


# --------------------------------------------------------------------------- orchestration (parent)


def main(argv=None) -> int:
    args = parse_args(argv)
    if importlib.util.find_spec("trl") is None:
        print("TRL is not installed; the benchmark needs it: pip install -e .[bench]", file=sys.stderr)
        return 2
    if args.side:
        if args.threads:
            torch.set_num_threads(args.threads)
        result = run_ours(args) if args.side == "ours" else run_trl(args)
        Path(args.result).write_text(json.dumps(result, indent=2), encoding="utf-8")
        return 0
    with tempfile.TemporaryDirectory(prefix="dpo_vs_trl_") as work:
        return compare(args, Path(work))


def end_to_end(result: dict) -> float:
    """Pairs per second over the whole loop plus any reference pass made before it."""
    return result["pairs"] / (result["seconds"] + result["reference_seconds"])


def name_architecture(model_dir: Path) -> None:
    """Write `architectures` into the built model's config.json: rlhf's `save_tiny` leaves it out, and
    DPOTrainer, given a path, picks the model class (and loads its reference model) from it."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    path = model_dir / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    if not config.get("architectures"):
        config["architectures"] = [MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[config["model_type"]]]
        path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def compare(args, work: Path) -> int:
    prepare(args, work)
    if Path(args.model).parent == work:  # built here (a --model directory is left as it is)
        name_architecture(Path(args.model))
    common = ["--steps", args.steps, "--batch-size", args.batch_size, "--max-length", args.max_length,
              "--beta", args.beta, "--lr", args.lr, "--warmup", args.warmup, "--skip", args.skip,
              "--model", args.model, "--data", args.data]  # fmt: skip
    common += ["--gradient-checkpointing"] if args.gradient_checkpointing else []
    common += ["--cache" if args.cache else "--no-cache", "--packing" if args.packing else "--no-packing"]
    common += ["--trl-precompute"] if args.trl_precompute else []
    common += [f"--threads={args.threads}"] if args.threads else []
    env = {**os.environ, "HF_HUB_DISABLE_TELEMETRY": "1"}  # TRL pings the Hub from its trainers' __init__
    runs: dict[str, list[dict]] = {"ours": [], "trl": []}
    load = [os.getloadavg()[0]]
    for repeat in range(args.repeats):  # alternating, so a disturbance hits both sides alike
        for side in runs:
            print(f"--- {side} (run {repeat + 1} of {args.repeats}): {args.steps} steps", flush=True)
            out = work / f"{side}{repeat}.json"
            cmd = [sys.executable, __file__, "--side", side, "--result", str(out), *map(str, common)]
            started = time.perf_counter()
            if subprocess.run(cmd, env=env).returncode != 0:
                print(f"the {side} run failed", file=sys.stderr)
                return 1
            result = json.loads(out.read_text()) | {"process_seconds": time.perf_counter() - started}
            result["end_to_end_pairs_per_s"] = end_to_end(result)
            evaluate(args, result)
            runs[side].append(result)
    load.append(os.getloadavg()[0])
    # The least disturbed run of each side (highest steady rate) stands for it; all runs are kept.
    best = {side: max(results, key=lambda r: r["steady_pairs_per_s"]) for side, results in runs.items()}
    ours, theirs = best["ours"], best["trl"]
    report = {
        "machine": machine() | {"load_average_1min_before_after": load},
        "setup": {k: getattr(args, k) for k in SETUP}
        | {
            "model": args.model_name,
            "data": args.source,
            "sequence_tokens": args.lengths,
            "gradient_checkpointing": args.gradient_checkpointing,
            "threads": args.threads,
            "loss": "sigmoid",
            "ours_reference_logps": "auto" if args.cache else "live",
            "ours_packing": args.packing,
            "trl_precompute_ref_log_probs": args.trl_precompute,
        },
        **best,
        "speed_ratio_ours_over_trl": ours["steady_pairs_per_s"] / theirs["steady_pairs_per_s"],
        "end_to_end_ratio_ours_over_trl": ours["end_to_end_pairs_per_s"] / theirs["end_to_end_pairs_per_s"],
        "memory_ratio_ours_over_trl": ours["memory"]["peak_mib"] / theirs["memory"]["peak_mib"],
        "process_memory_ratio_ours_over_trl": (
            ours["memory"]["process_peak_rss_mib"] / theirs["memory"]["process_peak_rss_mib"]
        ),
        "accuracy_ours_minus_trl": ours["held_out"]["accuracy"] - theirs["held_out"]["accuracy"],
        "runs": runs,
    }
    print_table(report)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"results written to {args.out}")
    return 0


def print_table(report: dict) -> None:
    m, s = report["machine"], report["setup"]
    print(f"\n{m['device']}; torch {m['torch']}, transformers {m['transformers']}, trl {m['trl']}")
    print(f"{s['model']}; {s['data']}")
    print(f"{s['batch_size']} pairs per step, beta {s['beta']}, lr {s['lr']}; tokens per sequence "
          f"{s['sequence_tokens']}")  # fmt: skip
    check = report["trl"]["tokens_check"]
    print(f"TRL's token ids equal rlhf's in {check['same_ids']} of {check['sequences']} sequences "
          f"(prompt/completion split: {check['same_prompt_split']})")  # fmt: skip
    print(f"load average (1 min) before/after: {m['load_average_1min_before_after']}")
    mem = "peak MiB" if "CPU" not in m["device"] else "peak RSS MiB"
    head = ("side", "reference", "steps", "pairs", "tokens", "positions computed", "loop s", "pairs/s",
            f"pairs/s after step {s['skip']}", "reference s", "end-to-end pairs/s", mem, "growth MiB", "process peak MiB", "process s",
            "CPU/wall", "loss first -> last", "held-out acc", "held-out margin")  # fmt: skip
    print(" | ".join(head))
    for side in ("ours", "trl"):
        r, h = report[side], report[side]["held_out"]
        print(
            f"{side} | {r['reference_logps']} | {r['steps']} | {r['pairs']:,} | {r['tokens']:,} | "
            f"{r['padded_tokens']:,} | {r['seconds']:.1f} | "
            f"{r['pairs_per_s']:.1f} | {r['steady_pairs_per_s']:.1f} | {r['reference_seconds']:.1f} | "
            f"{r['end_to_end_pairs_per_s']:.1f} | {r['memory']['peak_mib']:,.0f} | "
            f"{r['memory']['growth_mib']:,.0f} | {r['memory']['process_peak_rss_mib']:,.0f} | "
            f"{r['process_seconds']:.0f} | {r['cpu_per_wall']:.2f} | {r['loss_first']:.3f} -> {r['loss_last']:.3f} | "
            f"{h['accuracy']:.3f} | {h['margin']:.3f}"
        )
    print(
        f"ours / TRL: speed {report['speed_ratio_ours_over_trl']:.2f}x (steady pairs/s, higher is better), "
        f"end to end {report['end_to_end_ratio_ours_over_trl']:.2f}x (with the reference pass), "
        f"memory {report['memory_ratio_ours_over_trl']:.2f}x (training peak, lower is better; whole process "
        f"{report['process_memory_ratio_ours_over_trl']:.2f}x), "
        f"held-out accuracy {report['accuracy_ours_minus_trl']:+.3f}"
    )


if __name__ == "__main__":
    sys.exit(main())
