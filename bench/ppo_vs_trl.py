"""Seconds per PPO step and peak memory of `rlhf ppo` against TRL 1.12's `PPOTrainer`, full and LoRA.

    python bench/ppo_vs_trl.py               # random Llama, hidden 256, 4 layers; full and LoRA
    python bench/ppo_vs_trl.py --threads 1   # a CPU shared with other work: see below
    python bench/ppo_vs_trl.py --modes lora --steps 8 --repeats 2 --model DIR --new-tokens 64

TRL dropped `PPOTrainer` after 1.12.0 (`trl.experimental.ppo`). The first run installs that
release on its own, `pip install --no-deps --target .bench-deps/trl-1.12 trl==1.12.0`, and checks
its requirements against this environment; the TRL runs put that directory first on `sys.path`.
Each run is a subprocess (this script with `--side ours|trl --mode full|lora`), one after the
other, so memory peaks are separate. Same on both sides: the saved policy (a causal LM); one saved
one-label sequence classifier as the reward model (and as TRL's value model and rlhf's separate
critic); the prompts, rendered once with rlhf's default template and tokenized with its
`encode_prompt`; R prompts per step, one completion each; new tokens; PPO epochs; minibatch M
(TRL: per_device_train_batch_size R, gradient_accumulation_steps 1, num_mini_batches R/M: one
optimizer step per minibatch); sampling at temperature 1, top-k 0, top-p 1, ended by EOS; no
missing-EOS penalty; k1 KL in the reward, same coefficient; GAE (gamma 1, lambda 0.95), whitened
advantages; clip 0.2, value clip 0.2, value coefficient 0.1 (TRL's); AdamW at a constant learning
rate, no weight decay, no gradient clipping (TRL has none); no gradient checkpointing; float32 on
CPU; generation and no-grad scoring in batches of R. LoRA: rank 8, alpha 16, no dropout (TRL
zeroes every dropout), peft's default target modules; the reference is the policy with its
adapter disabled on both sides (full: a frozen copy).

Timed: the wall time of every PPO step, from the loop's start to the end of each step (rollout:
generation, log-probs, reference, values, rewards, advantages; all epochs of updates; the step's
logging), through `run_ppo`'s progress bar and TRL's `on_train_begin` / `on_step_end` callbacks;
the first `--skip` steps are left out of the steady mean. Memory: peak RSS (GPU: peak allocated)
from after the libraries are imported to the end of the run, i.e. with them; growth is the part
above that start. Differences that remain: the critic (full: both a separate model; LoRA: rlhf's
default `shared` value head on the policy, TRL's separate, fully trained value model: the memory
design being compared; `--our-critic separate` gives the like-for-like run); TRL runs every
forward with `output_hidden_states`; rlhf saves its final policy (inside the memory window, not
timed); sampled completions end at EOS at different points, so mean response lengths are shown.
With 2 threads on a CPU that other work also uses, a step can take 10-30x longer (the threads
wait on each other); CPU/wall far under the thread count marks such a run: use `--threads 1`.
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import json
import math
import os
import pkgutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/: the shared probe, the SFT bench's model
from common import Probe, machine  # noqa: E402
from sft_vs_trl import prepare_model  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BUNDLED_PROMPTS = ROOT / "src/rlhf/assets/demo/demonstrations.jsonl"
TRL_VERSION = "1.12.0"
TRL_DIR = ROOT / ".bench-deps/trl-1.12"
SEED = 0
LORA = {"r": 8, "alpha": 16}
SETUP = ("steps", "prompts_per_step", "minibatch_size", "new_tokens", "ppo_epochs", "lr", "kl_coef", "skip",
         "repeats")  # fmt: skip


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=5, help="PPO steps (rollout + updates) on each side")
    p.add_argument("--prompts-per-step", type=int, default=16, help="rollout size R (one completion each)")
    p.add_argument("--minibatch-size", type=int, default=8, help="sequences per optimizer step (divides R)")
    p.add_argument("--new-tokens", type=int, default=24, help="most tokens sampled per completion")
    p.add_argument("--ppo-epochs", type=int, default=2, help="passes over each rollout")
    p.add_argument("--lr", type=float, default=1e-5, help="constant learning rate on both sides")
    p.add_argument("--kl-coef", type=float, default=0.05, help="beta of the KL penalty in the reward")
    p.add_argument("--skip", type=int, default=1, help="first steps left out of the steady mean")
    p.add_argument("--modes", default="full,lora", help="comma-separated: full (no peft), lora")
    p.add_argument("--sides", default="ours,trl", help="comma-separated: ours, trl")
    p.add_argument("--our-critic", choices=["auto", "shared", "separate"], default="auto",
                   help="rlhf's critic; auto: separate for full (like TRL), shared value head for LoRA")  # fmt: skip
    p.add_argument("--model", help="HF causal LM directory (default: a random Llama built here)")
    p.add_argument("--hidden", type=int, default=256, help="built model: hidden size")
    p.add_argument("--layers", type=int, default=4, help="built model: decoder layers")
    p.add_argument("--vocab", type=int, default=512, help="built model: vocabulary (>= 512)")
    p.add_argument("--data", help="prompts in any format rlhf reads (default: the bundled demonstrations)")
    p.add_argument("--repeats", type=int, default=1, help="runs per side and mode, alternating; best counts")
    p.add_argument("--threads", type=int, help="torch threads in each run (default: torch's choice)")
    p.add_argument("--trl-dir", default=str(TRL_DIR), help=f"where TRL {TRL_VERSION} is (or gets) installed")
    p.add_argument("--out", default=str(ROOT / "bench/results/ppo_vs_trl.json"), help="results JSON")
    for hidden in ("--side", "--mode", "--result", "--reward", "--prompts", "--prompt-ids"):
        p.add_argument(hidden, help=argparse.SUPPRESS)
    return p.parse_args(argv)


# --------------------------------------------------------------------------- TRL 1.12, installed apart


def ensure_trl(target: Path) -> None:
    """Install TRL 1.12.0 (without dependencies) into `target` unless it is there; check that this
    environment satisfies its requirements (they must then be installed into `target` too)."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import Requirement

    if not (target / "trl/__init__.py").is_file():
        print(f"TRL {TRL_VERSION} (the last release with PPOTrainer) is not in {target}; installing it there "
              "(--no-deps, this environment is left alone)", flush=True)  # fmt: skip
        pip = [sys.executable, "-m", "pip", "install", "--no-deps", "--target"]
        cmd = [*pip, str(target), f"trl=={TRL_VERSION}"]
        if subprocess.run(cmd).returncode != 0:
            raise SystemExit(f"could not install TRL {TRL_VERSION}; run: {' '.join(cmd)}")
    meta = next(target.glob("trl-*.dist-info/METADATA")).read_text(encoding="utf-8")
    for line in meta.splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        req = Requirement(line.split(":", 1)[1].strip())
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue  # an extra
        try:
            have = version(req.name)
        except PackageNotFoundError:
            have = None
        if have is None or not req.specifier.contains(have, prereleases=True):
            print(f"warning: TRL {TRL_VERSION} needs {req}, this environment has {have or 'none'}; "
                  f"install it with: pip install --no-deps --target {target} '{req}'", file=sys.stderr)  # fmt: skip


# --------------------------------------------------------------------------- measurement (children)


def summarize(step_seconds: list[float], skip: int, probe: Probe, **extra) -> dict:
    """Per-step seconds (mean and median after `skip`), and the probe's memory and CPU use: CPU
    seconds per wall second from model loading to the end (about the thread count when nothing
    else runs) and the 1-minute load average before and after, signs of a disturbed run."""
    skip = min(skip, len(step_seconds) - 1)
    steady = sorted(step_seconds[skip:])
    return {
        "steps": len(step_seconds), "seconds": sum(step_seconds),
        "steady_seconds_per_step": sum(steady) / len(steady), "first_step_s": step_seconds[0],
        "median_seconds_per_step": (steady[(len(steady) - 1) // 2] + steady[len(steady) // 2]) / 2,
        "step_seconds": [round(s, 4) for s in step_seconds], "memory": probe.memory,
        "cpu_per_wall": probe.cpu / (time.perf_counter() - probe.times[0]), "load_average": probe.load,
        "threads": torch.get_num_threads(), **extra,
    }  # fmt: skip


def run_ours(args) -> dict:
    from rlhf.config.core import from_dict
    from rlhf.ppo import PpoConfig, run_ppo

    lora, r = args.mode == "lora", int(args.prompts_per_step)
    critic = args.our_critic if args.our_critic != "auto" else ("shared" if lora else "separate")
    peft = {"method": "lora", "lora_rank": LORA["r"], "lora_alpha": LORA["alpha"], "lora_dropout": 0.0}
    sampling = {"max_new_tokens": int(args.new_tokens), "temperature": 1.0, "top_k": 0, "top_p": 1.0,
                "batch_size": r, "seed": None}  # fmt: skip
    cfg = from_dict(PpoConfig, {
        "model": {"path": args.model, "gradient_checkpointing": False}, "peft": peft if lora else {"method": "none"},
        "data": {"path": args.prompts}, "prompt": {"template": "raw"},  # the prompts are rendered already
        "rollout": {"prompts_per_step": r, "samples_per_prompt": 1, "forward_batch_size": r, "sampling": sampling},
        "reward": {"sources": [{"model": args.reward, "batch_size": r, "normalize": "none"}], "no_eos_penalty": None},
        "kl": {"coef": float(args.kl_coef), "estimator": "k1", "controller": "fixed", "placement": "reward"},
        "advantage": {"estimator": "gae", "gamma": 1.0, "lam": 0.95, "whiten": True},
        "loss": {"clip_eps": 0.2, "value_clip": 0.2, "value_coef": 0.1, "entropy_coef": 0.0},
        "critic": {"mode": critic, **({"model": args.reward} if critic == "separate" else {})},
        "optimizer": {"lr": float(args.lr), "scheduler": "constant", "weight_decay": 0.0, "max_grad_norm": None,
                      "gradient_accumulation_steps": 1},
        "output_dir": str(Path(args.result).with_suffix("")),
        "logging": {"progress": False, "tensorboard": False, "log_every": 1},
        "max_steps": int(args.steps), "ppo_epochs": int(args.ppo_epochs), "minibatch_size": int(args.minibatch_size),
        "seed": SEED, "samples_every": 0, "save_every": 0,
    })  # fmt: skip
    import rlhf.ppo
    from rlhf.tracking import read_metrics
    from rlhf.training.loop import watch_steps

    # What run_ppo imports lazily, imported now: the memory growth is then, as TRL's, models and training.
    libraries = ["accelerate", "peft", "transformers", "rlhf.models", "rlhf.training", "rlhf.losses.ppo"]
    for name in libraries + [f"rlhf.ppo.{m.name}" for m in pkgutil.iter_modules(rlhf.ppo.__path__)]:
        importlib.import_module(name)

    probe = Probe()

    class LoopClock:  # the loop's start, then the end of every step (the probe started before the models)
        def started(self) -> None:
            probe.step(None)

        def stepped(self, step: int, row: dict, window: list) -> None:
            probe.step(0)

        def ended(self) -> None:
            pass

    probe.start()  # just before the models load, as on the TRL side
    with watch_steps(LoopClock()):
        summary = run_ppo(cfg).summary
    probe.end()
    times = probe.times[1:]  # loop start, then the end of every step
    if len(times) != len(summary["step_seconds"]) + 1:  # the loop changed: fall back to run_ppo's own clock
        times = [0.0] + list(itertools.accumulate(summary["step_seconds"]))
    rows = [row for row in read_metrics(cfg.output_dir) if "ppo/response_length" in row]
    return summarize(
        [b - a for a, b in zip(times, times[1:])], int(args.skip), probe, critic=critic,
        generation_seconds=summary["generation_seconds"], reported_step_seconds=summary["step_seconds"],
        lengths={"mean_response_tokens": [row["ppo/response_length"] for row in rows]},
        scores=[row.get("ppo/reward/raw") for row in rows], kl=summary["kl"],
    )  # fmt: skip


def run_trl(args) -> dict:
    sys.path.insert(0, args.trl_dir)  # TRL 1.12.0 ahead of the environment's newer TRL
    os.environ["TRL_EXPERIMENTAL_SILENCE"] = "1"
    import trl
    import trl.experimental.ppo.ppo_trainer as ppo_module
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM as CausalLM
    from transformers import AutoModelForSequenceClassification as SeqClassifier
    from transformers import AutoTokenizer, PrinterCallback, TrainerCallback
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    assert trl.__version__ == TRL_VERSION, f"TRL {trl.__version__} from {trl.__file__}, not {TRL_VERSION}"
    lora, r, m = args.mode == "lora", int(args.prompts_per_step), int(args.minibatch_size)
    cuda = torch.cuda.is_available()
    probe, gen_seconds, lengths = Probe(), [], []
    real_generation = ppo_module.batch_generation

    def batch_generation(model, queries, batch_size, pad_token_id, generation_config):
        start = time.perf_counter()
        out = real_generation(model, queries, batch_size, pad_token_id, generation_config)
        gen_seconds.append(time.perf_counter() - start)
        response = out[0][:, queries.shape[1] :]
        eos = response == tokenizer.eos_token_id
        first = torch.where(eos.any(1), eos.float().argmax(1) + 1, (response != pad_token_id).sum(1))
        lengths.append(first.float().mean().item())  # response tokens up to and with the first EOS
        return out

    ppo_module.batch_generation = batch_generation
    probe.start()  # just before the models load
    # rlhf's tokenizer as `prepare` saved it with the reward model (pad token set); TRL pads queries left.
    tokenizer = AutoTokenizer.from_pretrained(args.reward, padding_side="left")
    policy = CausalLM.from_pretrained(args.model, dtype=torch.float32)
    reward = SeqClassifier.from_pretrained(args.reward, num_labels=1, dtype=torch.float32)
    value = SeqClassifier.from_pretrained(args.reward, num_labels=1, dtype=torch.float32)  # trained by TRL
    ids = json.loads(Path(args.prompt_ids).read_text())
    config = PPOConfig(
        output_dir=str(Path(args.result).with_suffix("")), per_device_train_batch_size=r,
        gradient_accumulation_steps=1, num_mini_batches=r // m, num_ppo_epochs=int(args.ppo_epochs),
        total_episodes=int(args.steps) * r, local_rollout_forward_batch_size=r,
        response_length=int(args.new_tokens), stop_token="eos", temperature=1.0, missing_eos_penalty=None,
        kl_coef=float(args.kl_coef), kl_estimator="k1", whiten_rewards=False, gamma=1.0, lam=0.95,
        cliprange=0.2, cliprange_value=0.2, vf_coef=0.1, learning_rate=float(args.lr), lr_scheduler_type="constant",
        weight_decay=0.0, seed=SEED, gradient_checkpointing=False, bf16=cuda and torch.cuda.is_bf16_supported(),
        use_cpu=not cuda, num_sample_generations=0, logging_steps=1, save_strategy="no", report_to="none",
        disable_tqdm=True, dataloader_num_workers=0,
    )  # fmt: skip
    lora_config = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=0.0, task_type="CAUSAL_LM")
    trainer = PPOTrainer(
        args=config, processing_class=tokenizer, model=policy, ref_model=None, reward_model=reward,
        value_model=value, train_dataset=Dataset.from_dict({"input_ids": ids}), peft_config=lora_config if lora else None,
    )  # fmt: skip
    trainer.remove_callback(PrinterCallback)  # the per-step log dicts; the history keeps them
    loaded = {}

    class Timing(TrainerCallback):
        def on_train_begin(self, *_, **__):
            loaded["rss_mib"] = _rss_mib()  # the models are loaded
            probe.step(None)  # the loop starts here; model loading is not timed

        def on_step_end(self, *_, **__):
            probe.step(0)

    trainer.add_callback(Timing())
    trainer.train()
    probe.end()
    times = probe.times[1:]
    logs = [row for row in trainer.state.log_history if "objective/scores" in row]
    probe.memory["at_train_begin_mib"] = loaded["rss_mib"]
    return summarize(
        [b - a for a, b in zip(times, times[1:])], int(args.skip), probe,
        critic="separate (full, trained)", generation_seconds=gen_seconds,
        lengths={"mean_response_tokens": lengths}, scores=[row["objective/scores"] for row in logs],
        kl=[row["objective/kl"] for row in logs], trl=f"{trl.__version__} ({Path(trl.__file__).parent})",
    )  # fmt: skip


def _rss_mib() -> float:
    if torch.cuda.is_available():
        return torch.cuda.memory_allocated() / 2**20
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


# --------------------------------------------------------------------------- orchestration (parent)


def prepare(args, work: Path) -> None:
    """The policy, the reward (and TRL value) model, and the rendered prompts as text and token ids."""
    from transformers import AutoModelForSequenceClassification

    from rlhf.config.parts import ModelConfig, PromptConfig
    from rlhf.data import PromptRenderer, load_records
    from rlhf.data.load import prompts_of
    from rlhf.data.tokenize import encode_prompt
    from rlhf.models import load_tokenizer

    args.max_length = 1024  # prepare_model's position embeddings
    prepare_model(args, work)
    torch.manual_seed(SEED)  # the new one-label head: the same weights for both sides, both uses
    reward = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=1, dtype=torch.float32)
    tokenizer = load_tokenizer(ModelConfig(path=args.model), padding_side="left")
    reward.config.pad_token_id = tokenizer.pad_token_id
    args.reward = str(work / "reward")
    reward.save_pretrained(args.reward)
    tokenizer.save_pretrained(args.reward)
    source = args.data or str(BUNDLED_PROMPTS)
    renderer = PromptRenderer(PromptConfig(), tokenizer)  # rlhf's default template, rendered once
    texts = [renderer.render(p.prompt) for p in prompts_of(load_records(source, expect="prompt"))]
    repeats = math.ceil(args.steps * args.prompts_per_step / len(texts))  # enough for every step
    args.prompts = str(work / "prompts.jsonl")
    Path(args.prompts).write_text("".join(json.dumps({"prompt": t}) + "\n" for t in texts * repeats), "utf-8")
    ids = [encode_prompt(tokenizer, t) for t in texts * repeats]
    args.prompt_ids = str(work / "prompt_ids.json")
    Path(args.prompt_ids).write_text(json.dumps(ids), encoding="utf-8")
    lengths = [len(i) for i in ids[: len(texts)]]
    args.source = f"{source} ({len(texts)} prompts of {min(lengths)}-{max(lengths)} tokens, x{repeats})"


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.side:
        if args.threads:
            torch.set_num_threads(int(args.threads))
        result = run_ours(args) if args.side == "ours" else run_trl(args)
        Path(args.result).write_text(json.dumps(result, indent=2), encoding="utf-8")
        return 0
    if args.prompts_per_step % args.minibatch_size:
        raise SystemExit("--minibatch-size must divide --prompts-per-step")
    if "trl" in args.sides:
        ensure_trl(Path(args.trl_dir))
    with tempfile.TemporaryDirectory(prefix="ppo_vs_trl_") as work:
        return compare(args, Path(work))


def compare(args, work: Path) -> int:
    prepare(args, work)
    common = [f"--{k.replace('_', '-')}={getattr(args, k)}" for k in (*SETUP, "model", "reward", "prompts",
              "prompt_ids", "our_critic", "trl_dir")]  # fmt: skip
    common += [f"--threads={args.threads}"] if args.threads else []
    modes, sides = args.modes.split(","), args.sides.split(",")
    runs = {mode: {side: [] for side in sides} for mode in modes}
    failed: dict[str, str] = {}
    load = [os.getloadavg()[0]]
    # Alternating sides (and repeats), so a disturbance of the machine hits both alike.
    for mode, repeat, side in itertools.product(modes, range(args.repeats), sides):
        if f"{mode}/{side}" in failed:
            continue
        print(f"--- {side}, {mode} (run {repeat + 1} of {args.repeats}): {args.steps} PPO steps", flush=True)
        out, started = work / f"{mode}_{side}{repeat}.json", time.perf_counter()
        cmd = [sys.executable, __file__, "--side", side, "--mode", mode, "--result", str(out), *common]
        if subprocess.run(cmd).returncode != 0:
            print(f"the {side} run ({mode}) failed", file=sys.stderr)
            failed[f"{mode}/{side}"] = "failed"
            continue
        result = json.loads(out.read_text()) | {"process_seconds": time.perf_counter() - started}
        runs[mode][side].append(result)
    load.append(os.getloadavg()[0])
    report = {
        "machine": machine() | {"trl": f"{TRL_VERSION} (from {args.trl_dir})", "load_average_1min_before_after": load},
        "setup": {k: getattr(args, k) for k in SETUP} | {"model": args.model_name, "prompts": args.source},
        "failed": failed,
    }  # fmt: skip
    for mode in modes:
        # The least disturbed run of each side (fewest steady seconds per step) stands for it.
        best = {s: min(rs, key=lambda r: r["steady_seconds_per_step"]) for s, rs in runs[mode].items() if rs}
        entry = {**best, "runs": runs[mode]}
        if len(best) == 2:
            ours, trl = best["ours"], best["trl"]
            speed = trl["steady_seconds_per_step"] / ours["steady_seconds_per_step"]
            entry["speed_ratio_ours_over_trl"] = speed
            entry["memory_ratio_ours_over_trl"] = ours["memory"]["peak_mib"] / trl["memory"]["peak_mib"]
            entry["growth_ratio_ours_over_trl"] = ours["memory"]["growth_mib"] / trl["memory"]["growth_mib"]
        report[mode] = entry
    print_table(report, modes)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"results written to {args.out}")
    return 1 if failed else 0


def print_table(report: dict, modes: list[str]) -> None:
    m, s = report["machine"], report["setup"]
    print(f"\n{m['device']}; torch {m['torch']}, transformers {m['transformers']}, trl {m['trl']}")
    print(f"{s['model']}; {s['prompts']}")
    print(f"{s['steps']} PPO steps of {s['prompts_per_step']} prompts, {s['new_tokens']} new tokens, "
          f"{s['ppo_epochs']} epochs of minibatch {s['minibatch_size']}; load average (1 min) before/after: "
          f"{m['load_average_1min_before_after']}")  # fmt: skip
    mem = "peak MiB" if "CPU" not in m["device"] else "peak RSS MiB"
    print(" | ".join(("mode", "side", "critic", f"s/step after step {s['skip']}", "median s/step", "first step s",
                      "generation s/step", "response tokens", mem, "growth MiB", "CPU/wall")))  # fmt: skip
    for mode in modes:
        for side in ("ours", "trl"):
            r = report[mode].get(side)
            if r is None:
                print(f"{mode} | {side} | {report['failed'].get(f'{mode}/{side}', 'not run')}")
                continue
            gen = _mean(r["generation_seconds"][s["skip"] :])
            lengths = _mean(r["lengths"]["mean_response_tokens"])
            print(f"{mode} | {side} | {r['critic']} | {r['steady_seconds_per_step']:.2f} | "
                  f"{r['median_seconds_per_step']:.2f} | {r['first_step_s']:.2f} | {gen:.2f} | {lengths:.1f} | "
                  f"{r['memory']['peak_mib']:,.0f} | {r['memory']['growth_mib']:,.0f} | {r['cpu_per_wall']:.2f}"
                  f"{' (starved: other work ran)' if r['cpu_per_wall'] < 0.75 * r['threads'] else ''}")  # fmt: skip
        if "speed_ratio_ours_over_trl" in report[mode]:
            e, goal = report[mode], " (goal: >= 1.5x faster, <= 0.7x memory)" if mode == "lora" else ""
            print(f"{mode}: ours / TRL: speed {e['speed_ratio_ours_over_trl']:.2f}x (TRL s/step over ours), "
                  f"peak memory {e['memory_ratio_ours_over_trl']:.2f}x, growth {e['growth_ratio_ours_over_trl']:.2f}x{goal}")  # fmt: skip


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


if __name__ == "__main__":
    sys.exit(main())
