"""What several test files share: data files and planted data, the 2-process environment, a kill at
the first checkpoint, a tiny pipeline, a synthetic run directory and a report opened in a browser.
(The labeling app's own pieces are in `label_helpers`.) Test files import from here, never from
each other."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
from pathlib import Path

from rlhf.config.core import load_config
from rlhf.pipeline.config import PipelineConfig
from rlhf.report.browser import VIEWPORT

ROOT = Path(__file__).resolve().parent.parent
DEMOS = str(ROOT / "src" / "rlhf" / "assets" / "demo" / "demonstrations.jsonl")


def write_jsonl(path: Path, rows: list[dict]) -> str:
    """`rows` as JSON lines at `path` (its folder made); returns the path as text."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


# ----------------------------------------------------------------------------- planted data


WORDS = [
    "the",
    "cat",
    "dog",
    "sun",
    "tree",
    "blue",
    "red",
    "big",
    "small",
    "runs",
    "jumps",
    "sees",
    "a",
    "happy",
    "sad",
    "old",
    "new",
]


def planted_comparisons(n: int = 200) -> list[dict]:
    """Chosen completions say "please", rejected ones do not; otherwise random words."""
    rng = random.Random(0)
    rows = []
    for _ in range(n):
        words = lambda k: " ".join(rng.choice(WORDS) for _ in range(k))  # noqa: E731
        chosen = words(rng.randint(2, 5)).split()
        chosen.insert(rng.randint(0, len(chosen)), "please")
        rows.append(
            {"prompt": f"Say {words(2)}.", "chosen": " ".join(chosen), "rejected": words(rng.randint(3, 6))}
        )
    return rows


def planted_rankings(n: int) -> list[dict]:
    """Rankings of 2, 3 or 4 completions (1, 3 or 6 pairs): the more "please", the better. Every
    other one of 3 or 4 has its two worst tied (a pair fewer with `ties: skip`)."""
    rng = random.Random(1)
    rows = []
    for i in range(n):
        k = 2 + i % 3
        ranks = [min(r, k - 2) if k > 2 and i % 2 else r for r in range(k)]
        words = lambda: [rng.choice(WORDS) for _ in range(rng.randint(2, 5))]  # noqa: E731
        ranked = [(" ".join([*words(), *["please"] * (k - 1 - r)]), r) for r in ranks]
        rng.shuffle(ranked)
        rows.append(
            {
                "prompt": f"Say {rng.choice(WORDS)} {rng.choice(WORDS)}.",
                "completions": [text for text, _ in ranked],
                "ranks": [rank for _, rank in ranked],
            }
        )
    return rows


# ----------------------------------------------------------------------------- processes


def dist_env() -> dict[str, str]:
    # Gloo on the loopback interface: a hostname that resolves to another address can stall it.
    # One thread per process unless OMP_NUM_THREADS says otherwise (the tolerances are checked with
    # 1 and with 2: another thread count sums in another order).
    return {
        **os.environ,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        "TOKENIZERS_PARALLELISM": "false",
        "GLOO_SOCKET_IFNAME": "lo",
    }


def free_port() -> int:
    """A TCP port free on this machine now (for a launcher's rendezvous)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def kill_at_first_checkpoint(proc: subprocess.Popen, *, group: bool = False) -> None:
    """SIGKILL a run (no cleanup at all) as soon as it reports its first checkpoint; `group`: the
    whole process group (a launcher and its ranks, started with `start_new_session=True`)."""
    assert proc.stdout is not None
    for line in proc.stdout:
        if "[checkpoint] saved" in line:
            (os.killpg if group else os.kill)(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


# ----------------------------------------------------------------------------- a local benchmark task

MC_TASK = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: items.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
"""


def write_mc_task(folder: Path, name: str, items: list[tuple[str, list[str], int]]) -> Path:
    """A local lm-evaluation-harness multiple-choice task `name` in `folder`: task.yaml and its
    items.jsonl (question, choices, index of the answer) beside it; returns the YAML's path."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"question": q, "choices": c, "answer": a} for q, c, a in items]
    (folder / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "task.yaml").write_text(MC_TASK.format(name=name))
    return folder / "task.yaml"


# ----------------------------------------------------------------------------- a tiny pipeline

GOLD = '''
def score(prompts, completions):
    """Test gold: the share of letters that are `e` (any rule would do)."""
    return [sum(ch == "e" for ch in c) / max(1, len(c)) for c in completions]
'''


def tiny_overrides(run_dir: Path, gold: Path) -> list[str]:
    return [
        f"output_dir={run_dir}",
        f"gold={gold}:score",
        "sft.model.path=builtin:tiny", "sft.peft.method=none", f"sft.data.path={DEMOS}", "sft.data.max_length=96",
        "sft.max_steps=3", "sft.batch_size=4", "sft.logging.progress=false", "sft.logging.tensorboard=false",
        f"generate.data.path={DEMOS}", "generate.data.limit=8", "generate.samples_per_prompt=3",
        "generate.sampling.max_new_tokens=8", "generate.progress=false",
        "reward.peft.method=none", "reward.data.max_length=96", "reward.max_steps=3", "reward.batch_size=4",
        "reward.logging.progress=false", "reward.logging.tensorboard=false", "feedback.heldout_fraction=0.25",
        "ppo.peft.method=none", f"ppo.data.path={DEMOS}", "ppo.data.max_length=96", "ppo.max_steps=2",
        "ppo.rollout.prompts_per_step=4", "ppo.rollout.samples_per_prompt=2", "ppo.minibatch_size=4",
        "ppo.rollout.sampling.max_new_tokens=8", "ppo.logging.progress=false", "ppo.logging.tensorboard=false",
        f"eval.data.path={DEMOS}", "eval.data.limit=6", "eval.sampling.max_new_tokens=8", "eval.progress=false",
    ]  # fmt: skip


def pipeline_config(tmp_path: Path, *more: str) -> PipelineConfig:
    gold = tmp_path / "gold.py"
    gold.write_text(GOLD)
    return load_config(PipelineConfig, None, [*tiny_overrides(tmp_path / "run", gold), *more])


def statuses(summary) -> dict[str, str]:
    return {name: s["status"] for name, s in summary["stages"].items()}


# ----------------------------------------------------------------------------- a run directory and its report

XSS = "<script>alert(1)</script>"
ANSWER = f"Line one {XSS}\n    indented & <b>kept</b>"
FULL_IMAGES = 5


def write_json(path: Path, value: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2), encoding="utf-8")


def make_run(root: Path, *, gold: bool = True, skip: tuple[str, ...] = ()) -> Path:
    """A run directory with every stage (except those in `skip`), tiny but in the real formats."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.yaml").write_text(f"model: {{path: builtin:tiny}}\nnote: '{XSS}'\nsteps: 40\n")
    write_json(root / "summary.json", {"headline": {"gold win rate": 0.64, "policy": "ppo/policy"}})
    if "sft" not in skip:
        sft = [
            {"step": s, "elapsed_s": 0.1 * s, "train/loss": 2.0 / s, "train/lr": 1e-3} for s in range(1, 11)
        ]
        sft[4]["eval/loss"] = 0.9
        sft[9]["eval/loss"] = 0.5
        sft.append({"step": 10, "eval/samples": "| prompt | answer |\n| hi | hello |"})  # text: ignored
        write_jsonl(root / "sft" / "metrics.jsonl", sft)
    if "feedback" not in skip:
        write_json(
            root / "feedback" / "feedback.json",
            {"labelers": 3, "judgments": 30, "pairs": 10, "raw_agreement": 0.8, "krippendorff_alpha": 0.5,
             "gold_agreement": 0.9},
        )  # fmt: skip
    if "reward" not in skip:
        rows = [
            {"step": s, "train/loss": 0.7 - 0.01 * s, "train/accuracy": 0.5 + 0.01 * s} for s in range(1, 21)
        ]
        rows += [{"step": 20, "eval/loss": 0.6, "eval/accuracy": 0.7, "eval/margin": 0.4, "eval/ece": 0.05}]
        write_jsonl(root / "reward" / "metrics.jsonl", rows)
    if "reward_eval" not in skip:
        bins = [
            {"lower": 0.5, "upper": 0.75, "count": 30, "predicted": 0.6, "observed": 0.62},
            {"lower": 0.75, "upper": 1.0, "count": 10, "predicted": 0.85, "observed": 0.8},
            {"lower": 0.25, "upper": 0.5, "count": 0, "predicted": None, "observed": None},
        ]
        write_json(
            root / "reward_eval" / "eval.json",
            {"accuracy": 0.725, "margin": 0.77, "ece": 0.04, "pairs": 40,
             "calibration": {"bins": bins, "ece": 0.04, "pairs": 40},
             "accuracy_by_position": [{"position": 0, "pairs": 20, "accuracy": 0.8}]},
        )  # fmt: skip
    if "ppo" not in skip:
        rows = []
        for s in range(1, 41):
            row = {"step": s, "ppo/reward/raw": 0.02 * s, "ppo/reward/normalized": 0.01 * s, "ppo/kl": 0.3 * s,
                   "ppo/beta": 0.05, "ppo/entropy": 1.0 - 0.01 * s, "ppo/response_length": 20.0,
                   "ppo/clip_frac": 0.1}  # fmt: skip
            if gold:
                row["ppo/reward/gold"] = 3.0 - abs(s - 20) * 0.05  # rises, then falls: over-optimized
            rows.append(row)
        rows.append({"step": 40, "ppo/samples": "| reward | prompt |"})
        write_jsonl(root / "ppo" / "metrics.jsonl", rows)
        samples = [
            {"step": s, "prompt": f"Prompt {s}", "completion": ANSWER, "reward": 0.5} for s in (1, 1, 20, 40)
        ]
        write_jsonl(root / "ppo" / "samples.jsonl", samples)
    if "eval" not in skip:
        stat = {"mean": 1.5, "stderr": 0.1, "n": 12}
        write_json(
            root / "eval" / "eval.json",
            {"prompts": 12, "policy": "ppo/policy", "baseline": "sft/model", "headline": "gold",
             "win_rate": {"gold": {"n": 12, "wins": 7, "ties": 2, "losses": 3, "rate": 0.667, "low": 0.45,
                                   "high": 0.88}},
             "policy_scores": {"gold": stat}, "baseline_scores": {"gold": {"mean": 1.0, "stderr": 0.2, "n": 12}},
             "kl": {"sequence": {"mean": 2.5, "stderr": 0.5, "n": 12}, "per_token": 0.2, "reference": "sft/model"},
             "policy_length": {"mean": 12.0}, "baseline_length": {"mean": 14.0}},
        )  # fmt: skip
        samples = [
            {"prompt": f"Question {i}?", "policy": ANSWER, "policy_scores": {"gold": 2.0},
             "baseline": f"Old answer {i}", "baseline_scores": {"gold": 1.0}}
            for i in range(12)
        ]  # fmt: skip
        write_jsonl(root / "eval" / "samples.jsonl", samples)
    return root


def open_report(browser, path: Path):
    """The report loaded in a new page, with the console errors, page errors and requests it made."""
    page = browser.new_page(viewport=VIEWPORT)
    seen = {"console": [], "errors": [], "requests": []}
    page.on("console", lambda m: seen["console"].append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: seen["errors"].append(str(e)))
    page.on("request", lambda r: seen["requests"].append(r.url))
    page.goto(path.resolve().as_uri())
    page.wait_for_load_state("load")
    return page, seen
