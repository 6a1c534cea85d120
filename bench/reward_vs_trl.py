"""Pairs per second, peak memory and held-out accuracy of `rlhf reward` against TRL's `RewardTrainer`.

    python bench/reward_vs_trl.py             # random Llama, planted-word pairs: ~2 min on 2 CPU cores
    python bench/reward_vs_trl.py --repeats 2 # each side twice, alternating; the best run counts
    python bench/reward_vs_trl.py --model DIR --data FILE --held-out 200 --steps 300 --lr 1e-5

Each trainer runs in its own subprocess (this script with `--side ours|trl`), one after the other,
so their memory peaks are separate. Both train the same saved weights (a causal LM that both load
as a one-label sequence classifier, the new head drawn from the same seed) on the same pairs in
the same order: the pairs are tokenized once, by rlhf, and handed to TRL pre-tokenized
(`chosen_ids` / `rejected_ids`), so every step sees the same sequences on both sides. TRL pads
them, one per row; rlhf packs them into rows of --max-length (its default; --no-packing pads too).
Bradley-Terry loss, AdamW, linear schedule, no eval, no saving while training. Afterwards this
script loads both saved models with plain transformers and scores the same held-out pairs with
them. What is timed and counted is in docs/benchmarks.md. Needs `pip install -e .[bench]`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/: the shared probe, the SFT bench's model
from common import PairProbe, machine, sequence_counts  # noqa: E402
from sft_vs_trl import prepare_model  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SEED = 0
PLANTED = "please"
SETUP = ("steps", "batch_size", "max_length", "lr", "warmup", "skip", "repeats")
WORDS = [
    "the", "a", "one", "two", "red", "blue", "green", "small", "big", "old", "new", "warm", "cold", "dark",
    "light", "cat", "dog", "bird", "fish", "tree", "river", "stone", "house", "road", "city", "garden",
    "book", "song", "letter", "window", "door", "table", "morning", "evening", "night", "runs", "walks",
    "sees", "finds", "keeps", "opens", "closes", "holds", "brings", "makes", "quiet", "loud", "happy",
    "slow", "fast", "near", "far",
]  # fmt: skip


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=40, help="optimizer steps on each side")
    p.add_argument("--batch-size", type=int, default=16, help="pairs per optimizer step")
    p.add_argument("--max-length", type=int, default=256, help="tokens per sequence (prompt + completion)")
    p.add_argument("--lr", type=float, default=1e-4, help="peak learning rate on both sides")
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
    p.add_argument(
        "--packing", action=argparse.BooleanOptionalAction, default=True,
        help="rlhf packs each micro-batch into rows of --max-length (its default); --no-packing pads "
        "like TRL, for a like-for-like look at the training loop alone",
    )  # fmt: skip
    p.add_argument("--out", default=str(ROOT / "bench/results/reward_vs_trl.json"), help="results JSON")
    p.add_argument("--side", choices=["ours", "trl"], help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    return p.parse_args(argv)


# --------------------------------------------------------------------------- data


def planted_pairs(count: int, rng: random.Random) -> list[dict]:
    """Comparisons whose rule is learnable: the chosen completion contains "please" somewhere,
    the rejected one does not. Both completions have the same word-count distribution, so the
    length says nothing; prompts and the rest of the words are random."""

    def words(k: int) -> list[str]:
        return [rng.choice(WORDS) for _ in range(k)]

    rows = []
    for _ in range(count):
        chosen = words(rng.randint(8, 40) - 1)
        chosen.insert(rng.randint(0, len(chosen)), PLANTED)
        rows.append({
            "prompt": f"Write a note about the {' and the '.join(words(rng.randint(1, 3)))}.",
            "chosen": " ".join(chosen),
            "rejected": " ".join(words(rng.randint(8, 40))),
        })  # fmt: skip
    return rows


def as_pairs(records: list, renderer) -> list[dict]:
    """{prompt, chosen, rejected[, margin]} rows with rendered prompts; rankings become their pairs
    (ties left out), so that both trainers see the same one-pair-per-row data."""
    from rlhf.data import Comparison, Ranking

    rows = []
    for record in records:
        prompt = renderer.render(record.prompt)
        if isinstance(record, Comparison):
            row = {"prompt": prompt, "chosen": record.chosen, "rejected": record.rejected}
            rows.append(row if record.margin is None else {**row, "margin": record.margin})
        elif not isinstance(record, Ranking):
            raise SystemExit(f"--data must hold comparisons or rankings, not {record.kind} records")
        else:
            done = record.completions
            rows += [{"prompt": prompt, "chosen": done[i], "rejected": done[j]} for i, j in record.pairs()]
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


def encode_pairs(path: str, tokenizer, max_length: int) -> list:
    """rlhf's groups (chosen ids, rejected ids, margin) of a pairs JSONL, exactly as `run_reward`
    builds them from it (prompts already rendered: template raw)."""
    from rlhf.config.parts import DataConfig, PromptConfig
    from rlhf.data import PromptRenderer, load_records
    from rlhf.preference.groups import build_groups

    records = load_records(DataConfig(path=path, max_length=max_length), expect="reward").records
    renderer = PromptRenderer(PromptConfig(template="raw"), tokenizer)
    return build_groups(records, "pairwise", renderer, tokenizer, max_length=max_length)[0]


# --------------------------------------------------------------------------- measurement (children)


def weight_sum(module: torch.nn.Module) -> float:
    return sum(p.detach().double().sum().item() for p in module.parameters())


def run_ours(args) -> dict:
    import rlhf.models.scalar as scalar
    from rlhf.config import load_config
    from rlhf.reward.config import RewardConfig
    from rlhf.reward.train import run_reward
    from rlhf.training.loop import watch_steps

    probe, head = PairProbe(count=sequence_counts), {}
    real_load = scalar.load_scalar_model

    def load_scalar_model(*a, **k):
        model = real_load(*a, **k)
        head["sum"] = weight_sum(model.head)  # the fresh head: the same draw as TRL's?
        return model

    scalar.load_scalar_model = load_scalar_model
    overrides = [
        f"model.path={args.model}", f"data.path={args.data}", f"data.max_length={args.max_length}",
        f"model.gradient_checkpointing={str(args.gradient_checkpointing).lower()}",
        "prompt.template=raw",  # the data file holds rendered prompts already
        f"packing={str(args.packing).lower()}",
        f"batch_size={args.batch_size}", f"max_steps={args.steps}", "loss_type=pairwise", "centering=0",
        f"optimizer.lr={args.lr}", "optimizer.scheduler=linear", f"optimizer.warmup_steps={args.warmup}",
        "optimizer.weight_decay=0", "optimizer.max_grad_norm=1.0", f"seed={SEED}",
        f"output_dir={Path(args.result).with_suffix('')}", "logging.progress=false",
        "logging.tensorboard=false",
    ]  # fmt: skip
    with watch_steps(probe):
        summary = run_reward(load_config(RewardConfig, None, overrides)).summary
    losses, accuracy = summary["train_loss"], summary["train_accuracy"]
    return probe.report(
        args.skip, loss_first=losses[0], loss_last=losses[-1], train_accuracy_last=accuracy[-1],
        model_dir=summary["model_dir"], head_init_sum=head["sum"],
        reported={"train_seconds": summary["train_seconds"]},  # run_reward's own clock
    )  # fmt: skip


def run_trl(args) -> dict:
    from datasets import Dataset
    from transformers import PrinterCallback, TrainerCallback
    from trl import RewardConfig, RewardTrainer
    from trl.trainer.reward_trainer import DataCollatorForPreference

    from rlhf.config.parts import ModelConfig
    from rlhf.models import load_tokenizer, resolve_dtype
    from rlhf.training.batches import BatchStream

    # The very sequences rlhf trains on, in the very order its BatchStream draws them (TRL reads
    # them sequentially), so each step's padded batch is the same on both sides.
    tokenizer = load_tokenizer(ModelConfig(path=args.model), padding_side="right")
    groups = encode_pairs(args.data, tokenizer, args.max_length)
    stream = iter(BatchStream(len(groups), args.batch_size, seed=SEED))
    order = [i for _ in range(args.steps) for i in next(stream)]
    columns = {
        "chosen_ids": [groups[i].input_ids[0] for i in order],
        "rejected_ids": [groups[i].input_ids[1] for i in order],
    }
    if any(g.margin is not None for g in groups):  # rlhf uses the data's margins (`margin: true`)
        columns["margin"] = [groups[i].margin or 0.0 for i in order]
    cuda = torch.cuda.is_available()
    config = RewardConfig(
        output_dir=str(Path(args.result).with_suffix("")), max_length=args.max_length,
        model_init_kwargs={"dtype": str(resolve_dtype(ModelConfig().dtype)).removeprefix("torch.")},  # as rlhf
        per_device_train_batch_size=args.batch_size, gradient_accumulation_steps=1, max_steps=args.steps,
        train_sampling_strategy="sequential", learning_rate=args.lr, lr_scheduler_type="linear",
        warmup_steps=args.warmup, weight_decay=0.0, max_grad_norm=1.0, seed=SEED,
        center_rewards_coefficient=None, disable_dropout=True,
        bf16=cuda and torch.cuda.is_bf16_supported(), use_cpu=not cuda,
        activation_checkpointing=args.gradient_checkpointing,  # TRL's default: on
        activation_checkpointing_kwargs={"use_reentrant": False},
        logging_steps=1,  # for the loss of every step (rlhf keeps it anyway)
        save_strategy="no", eval_strategy="no", report_to="none", disable_tqdm=True, dataloader_num_workers=0,
    )  # fmt: skip
    collated = []
    real_collator = DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id)

    def collator(examples):  # real tokens, padded positions and pairs of every micro-batch
        batch = real_collator(examples)
        collated.append((int(batch["attention_mask"].sum()), batch["input_ids"].numel(), len(examples)))
        return batch

    trainer = RewardTrainer(
        model=args.model, args=config, train_dataset=Dataset.from_dict(columns), processing_class=tokenizer,
        data_collator=collator,
    )  # fmt: skip
    assert len(trainer.train_dataset) == len(order), "TRL filtered pairs out"
    probe = PairProbe()

    class Timing(TrainerCallback):
        def on_train_begin(self, *_, **__):
            probe.start()

        def on_step_end(self, _args, state, *_, **__):
            # The loader may collate a batch ahead; batches come in order, so step k is collated[k - 1].
            tokens, padded, pairs = collated[state.global_step - 1]
            probe.step(tokens, pairs, padded)

        def on_train_end(self, *_, **__):
            probe.end()

    trainer.add_callback(Timing())
    trainer.remove_callback(PrinterCallback)  # the per-step log dicts on stdout; the history keeps them
    head = weight_sum(getattr(trainer.model, "score", None) or trainer.model.classifier)
    trainer.train()
    model_dir = Path(config.output_dir) / "model"
    trainer.save_model(str(model_dir))
    logs = [row for row in trainer.state.log_history if "loss" in row]
    return probe.report(
        args.skip, loss_first=logs[0]["loss"], loss_last=logs[-1]["loss"], train_accuracy_last=logs[-1]["accuracy"],
        model_dir=str(model_dir), head_init_sum=head, total_train_tokens=trainer._total_train_tokens,
        checkpointing=bool(trainer.args.activation_checkpointing),
    )  # fmt: skip


# --------------------------------------------------------------------------- orchestration (parent)


def prepare(args, work: Path) -> None:
    """The model directory and the training / held-out pairs JSONL (rendered prompts)."""
    from rlhf.config.parts import ModelConfig, PromptConfig
    from rlhf.data import PromptRenderer, load_records
    from rlhf.data.examples import split_eval
    from rlhf.models import load_tokenizer

    prepare_model(args, work)
    tokenizer = load_tokenizer(ModelConfig(path=args.model), padding_side="right")
    renderer = PromptRenderer(PromptConfig(), tokenizer)  # rlhf's default template, rendered once
    if args.data:
        records = load_records(args.data, expect="reward").records
        fraction = args.held_out / len(records)
        train, held_out = split_eval(records, fraction, SEED)
        train, held_out = as_pairs(train, renderer), as_pairs(held_out, renderer)
        counts = f"{len(records)} records: {len(train)} pairs to train on, {len(held_out)} held out"
        args.source = f"{args.data} ({counts})"
    else:
        args.pairs = args.pairs or args.steps * args.batch_size
        rows = planted_pairs(args.pairs + args.held_out, random.Random(SEED))
        records = load_records(write_jsonl(work / "generated.jsonl", rows), expect="reward").records
        train, held_out = as_pairs(records[: args.pairs], renderer), as_pairs(records[args.pairs :], renderer)
        args.source = (
            f"generated: chosen completions contain {PLANTED!r}, rejected ones do not "
            f"({len(train)} pairs to train on, {len(held_out)} held out)"
        )
    args.data = write_jsonl(work / "train.jsonl", train)
    args.held_out_data = write_jsonl(work / "held_out.jsonl", held_out)
    groups = encode_pairs(args.data, tokenizer, args.max_length)
    lengths = [len(ids) for g in groups for ids in g.input_ids]
    args.lengths = {"min": min(lengths), "mean": round(sum(lengths) / len(lengths), 1), "max": max(lengths)}


def held_out_scores(model_dir: str, groups: list, pad_id: int, batch_size: int = 32) -> list[list[float]]:
    """Every held-out completion's reward from a saved model loaded with plain transformers."""
    from transformers import AutoModelForSequenceClassification

    from rlhf.data.rows import pad_right

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = pad_id  # transformers reads the reward at the last non-pad token
    model.to(device).eval()
    scores = []
    with torch.no_grad():
        for start in range(0, len(groups), batch_size):
            chunk = groups[start : start + batch_size]
            ids, mask = pad_right([seq for g in chunk for seq in g.input_ids], pad_id)
            values = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.squeeze(-1)
            values = values.float().cpu().tolist()
            scores += [values[2 * k : 2 * k + 2] for k in range(len(chunk))]
    return scores


def evaluate(args, result: dict) -> None:
    """Held-out pairwise accuracy, margin and loss of one side's saved model (rlhf's metric code)."""
    from rlhf.config.parts import ModelConfig
    from rlhf.models import load_tokenizer
    from rlhf.reward.train import reward_metrics

    tokenizer = load_tokenizer(ModelConfig(path=args.model), padding_side="right")
    groups = encode_pairs(args.held_out_data, tokenizer, args.max_length)
    scores = held_out_scores(result["model_dir"], groups, tokenizer.pad_token_id)
    metrics = reward_metrics(groups, scores, "pairwise", "skip", 10)
    result["held_out"] = {k: metrics[k] for k in ("accuracy", "margin", "loss", "pairs")}


def main(argv=None) -> int:
    args = parse_args(argv)
    if importlib.util.find_spec("trl") is None:
        print("TRL is not installed; the benchmark needs it: pip install -e .[bench]", file=sys.stderr)
        return 2
    if args.side:
        result = run_ours(args) if args.side == "ours" else run_trl(args)
        Path(args.result).write_text(json.dumps(result, indent=2), encoding="utf-8")
        return 0
    with tempfile.TemporaryDirectory(prefix="reward_vs_trl_") as work:
        return compare(args, Path(work))


def compare(args, work: Path) -> int:
    prepare(args, work)
    common = ["--steps", args.steps, "--batch-size", args.batch_size, "--max-length", args.max_length,
              "--lr", args.lr, "--warmup", args.warmup, "--skip", args.skip, "--model", args.model,
              "--data", args.data]  # fmt: skip
    common += ["--gradient-checkpointing"] if args.gradient_checkpointing else []
    common += ["--packing" if args.packing else "--no-packing"]
    runs: dict[str, list[dict]] = {"ours": [], "trl": []}
    load = [os.getloadavg()[0]]
    for repeat in range(args.repeats):  # alternating, so a disturbance hits both sides alike
        for side in runs:
            print(f"--- {side} (run {repeat + 1} of {args.repeats}): {args.steps} steps", flush=True)
            out = work / f"{side}{repeat}.json"
            cmd = [sys.executable, __file__, "--side", side, "--result", str(out), *map(str, common)]
            started = time.perf_counter()
            if subprocess.run(cmd).returncode != 0:
                print(f"the {side} run failed", file=sys.stderr)
                return 1
            result = json.loads(out.read_text()) | {"process_seconds": time.perf_counter() - started}
            evaluate(args, result)
            runs[side].append(result)
    load.append(os.getloadavg()[0])
    # The least disturbed run of each side (highest steady rate) stands for it; all runs are kept.
    best = {side: max(results, key=lambda r: r["steady_pairs_per_s"]) for side, results in runs.items()}
    report = {
        "machine": machine() | {"load_average_1min_before_after": load},
        "setup": {k: getattr(args, k) for k in SETUP}
        | {
            "model": args.model_name,
            "data": args.source,
            "sequence_tokens": args.lengths,
            "gradient_checkpointing": args.gradient_checkpointing,
            "ours_packing": args.packing,
        },
        **best,
        "speed_ratio_ours_over_trl": best["ours"]["steady_pairs_per_s"] / best["trl"]["steady_pairs_per_s"],
        "memory_ratio_ours_over_trl": best["ours"]["memory"]["peak_mib"] / best["trl"]["memory"]["peak_mib"],
        "accuracy_ours_minus_trl": best["ours"]["held_out"]["accuracy"] - best["trl"]["held_out"]["accuracy"],
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
    print(f"{s['batch_size']} pairs per step; tokens per sequence {s['sequence_tokens']}")
    print(f"load average (1 min) before/after: {m['load_average_1min_before_after']}")
    mem = "peak MiB" if "CPU" not in m["device"] else "peak RSS MiB"
    head = ("side", "steps", "pairs", "loop s", "pairs/s", f"pairs/s after step {s['skip']}", "tok/s after",
            mem, "growth MiB", "process s", "loss first -> last", "held-out acc", "held-out margin")  # fmt: skip
    print(" | ".join(head))
    for side in ("ours", "trl"):
        r, h = report[side], report[side]["held_out"]
        print(
            f"{side} | {r['steps']} | {r['pairs']:,} | {r['seconds']:.1f} | {r['pairs_per_s']:.1f} | "
            f"{r['steady_pairs_per_s']:.1f} | {r['steady_tokens_per_s']:,.0f} | "
            f"{r['memory']['peak_mib']:,.0f} | {r['memory']['growth_mib']:,.0f} | {r['process_seconds']:.0f} | "
            f"{r['loss_first']:.3f} -> {r['loss_last']:.3f} | {h['accuracy']:.3f} | {h['margin']:.2f}"
        )
    print(
        f"ours / TRL: speed {report['speed_ratio_ours_over_trl']:.2f}x (steady pairs/s, higher is better), "
        f"memory {report['memory_ratio_ours_over_trl']:.2f}x (training peak, lower is better), "
        f"held-out accuracy {report['accuracy_ours_minus_trl']:+.3f}"
    )


if __name__ == "__main__":
    sys.exit(main())
