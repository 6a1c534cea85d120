"""`rlhf demo`: the whole RLHF loop on a summarization task, offline, in minutes on a CPU.

The demo writes its task data (`rlhf.demo.task`: short profiles to summarize, demonstrations of
mixed quality, and a hidden gold rule for what people prefer), makes its own base model (a small
Llama with a tokenizer learned from the task's text, random weights), and runs `rlhf pipeline`:
SFT on the demonstrations, candidates from the SFT model, simulated labelers judging pairs by the
gold rule with Bradley-Terry noise, a reward model, then PPO against it and, from the same SFT
model and feedback, DPO, RRHF, best-of-4 and rejection sampling; the evaluation puts every policy
side by side with SFT on held-out documents, and the HTML report shows it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhf.config.core import ConfigError
from rlhf.config.parts import DataConfig, LoggingConfig, OptimizerConfig, PeftConfig
from rlhf.dpo.config import DpoConfig
from rlhf.eval.config import EvalPolicyConfig
from rlhf.generate.config import GenerateConfig
from rlhf.generation.config import SamplingConfig
from rlhf.pipeline.config import (
    METHODS,
    BestOfNConfig,
    FeedbackConfig,
    PipelineConfig,
    RejectionSamplingConfig,
)
from rlhf.ppo.config import AdvantageConfig, KLConfig, PpoConfig, RolloutConfig
from rlhf.reward.config import RewardConfig, RewardEvalConfig
from rlhf.rrhf.config import RrhfConfig
from rlhf.sft.config import SftConfig, SftEvalConfig

GOLD = "rlhf.demo.task:gold_score"
MAX_NEW_TOKENS = 40


@dataclass
class DemoTaskConfig:
    sft_examples: int = 1500
    """Documents with one demonstration each, for SFT (a quarter of them good; see `rlhf.demo.task`)."""
    candidate_prompts: int = 600
    """Documents the SFT model writes `pipeline.generate.samples_per_prompt` summaries of, for the labelers."""
    ppo_prompts: int = 400
    """Documents PPO samples from."""
    eval_prompts: int = 200
    """Held-out documents for the evaluation (none of them seen in training)."""
    seed: int = 0
    """Seed of the task data and of the base model's weights."""
    hidden_size: int = 128
    """Width of the base model (a small Llama; its tokenizer is learned from the task's text)."""
    layers: int = 2
    """Transformer blocks of the base model."""
    heads: int = 8
    """Attention heads per block (`hidden_size` must divide by it). Eight of 16 dimensions rather
    than four of 32, at the same size and cost: on task seed 11 the SFT model with four never
    learned to copy the pet's colour (wrong in 67% of its greedy answers), with eight it did (0.5%).
    vLLM's CPU attention takes heads of 32 dimensions or more: `task.heads=4` to roll out with it."""
    vocab_size: int = 640
    """Largest tokenizer size (merges stop earlier when the task's text has no pair left to merge):
    enough that every word of the task is one token."""

    def __post_init__(self) -> None:
        for name in (
            "sft_examples",
            "candidate_prompts",
            "ppo_prompts",
            "eval_prompts",
            "hidden_size",
            "layers",
            "heads",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"`task.{name}` must be at least 1")
        if self.hidden_size % self.heads:
            raise ConfigError(
                f"`task.hidden_size` ({self.hidden_size}) must divide by `task.heads` ({self.heads})"
            )


def demo_pipeline() -> PipelineConfig:
    """The pipeline settings the demo runs with (its data and model paths are filled in at run time)."""
    sampling = SamplingConfig(max_new_tokens=MAX_NEW_TOKENS, temperature=1.0)
    return PipelineConfig(
        output_dir="runs/demo",
        gold=GOLD,
        sft=SftConfig(
            peft=PeftConfig(method="none"),
            data=DataConfig(max_length=128),
            eval=SftEvalConfig(fraction=0.05, every=300, generations=2, max_new_tokens=MAX_NEW_TOKENS),
            optimizer=OptimizerConfig(lr=3e-3, warmup_ratio=0.05, scheduler="cosine"),
            logging=LoggingConfig(log_every=25, progress=False),
            batch_size=16,
            max_steps=900,
            packing=True,
        ),
        generate=GenerateConfig(
            sampling=SamplingConfig(max_new_tokens=MAX_NEW_TOKENS, batch_size=64),
            samples_per_prompt=4,
            unique=False,
        ),
        feedback=FeedbackConfig(labelers=3, temperature=1.0),
        reward=RewardConfig(
            peft=PeftConfig(method="none"),
            data=DataConfig(max_length=128),
            eval=RewardEvalConfig(every=100),
            optimizer=OptimizerConfig(lr=1e-3, warmup_ratio=0.05, scheduler="linear"),
            logging=LoggingConfig(log_every=25, progress=False),
            batch_size=16,
            max_steps=400,
            centering=0.01,
        ),
        ppo=PpoConfig(
            peft=PeftConfig(method="none"),
            data=DataConfig(max_length=128),
            rollout=RolloutConfig(
                prompts_per_step=8,
                samples_per_prompt=4,
                sampling=SamplingConfig(max_new_tokens=MAX_NEW_TOKENS, seed=None, batch_size=64),
            ),
            # PPO's clipped objective with leave-one-out advantages over the 4 samples of a prompt:
            # in this budget it beats a learned critic (GAE), which has 60 steps to learn values.
            advantage=AdvantageConfig(estimator="rloo"),
            # The leash is a per-token loss term (k2; `kl.placement: auto` with RLOO): summed into the
            # reward, it let 1-2% of answers run away into repetition ("He He He ...") that carried two
            # thirds of the KL; see the README's demo section.
            kl=KLConfig(coef=0.2),
            optimizer=OptimizerConfig(lr=1e-4, scheduler="constant"),
            logging=LoggingConfig(log_every=1, progress=False),
            max_steps=60,
            minibatch_size=8,
            samples_every=10,
        ),
        methods=list(METHODS),
        # DPO on the same pairs the reward model learned from; no reward model, no sampling.
        dpo=DpoConfig(
            peft=PeftConfig(method="none"),
            data=DataConfig(max_length=128),
            optimizer=OptimizerConfig(lr=1e-4, warmup_ratio=0.1),
            logging=LoggingConfig(log_every=10, progress=False),
            beta=0.5,  # measured: 0.1 drifted to a KL of 3 nats for a lower gold win rate
            batch_size=16,
            epochs=2.0,
        ),
        # RRHF on the 4 candidates of each document, ranked by the reward model.
        rrhf=RrhfConfig(
            peft=PeftConfig(method="none"),
            data=DataConfig(max_length=128),
            optimizer=OptimizerConfig(lr=1e-4, warmup_ratio=0.1),
            logging=LoggingConfig(log_every=10, progress=False),
            batch_size=16,
            epochs=2.0,
        ),
        best_of_n=BestOfNConfig(n=4),
        rejection_sampling=RejectionSamplingConfig(
            n=4,
            sampling=SamplingConfig(max_new_tokens=MAX_NEW_TOKENS, batch_size=64),
            sft=SftConfig(
                peft=PeftConfig(method="none"),
                data=DataConfig(max_length=128),
                optimizer=OptimizerConfig(lr=3e-4, warmup_ratio=0.05),
                logging=LoggingConfig(log_every=10, progress=False),
                batch_size=16,
                epochs=2.0,
            ),
        ),
        eval=EvalPolicyConfig(sampling=sampling, progress=False),
    )


@dataclass
class DemoConfig:
    task: DemoTaskConfig = field(default_factory=DemoTaskConfig)
    """The size of the task and of the base model."""
    pipeline: PipelineConfig = field(default_factory=demo_pipeline)
    """The pipeline it runs (`rlhf pipeline --print-config` documents every field). The demo sets the
    data paths and the base model (`sft.model.path`) itself; `pipeline.output_dir` is the run directory."""
    seeds: int = 1
    """Run the whole demo for this many task seeds (`task.seed`, `task.seed` + 1, ...), each in
    `<output_dir>/seed-<s>`, and print every method's median, quartiles, mean and worst seed over
    them and each seed's SFT and reward-model checks (also in `<output_dir>/seeds.json`). 1: one run
    in `output_dir` itself."""
    ai_feedback: bool = False
    """Label the pairs with a simulated LLM judge instead of simulated people
    (`pipeline.feedback.source: judge`): the task's gold rule behind an OpenAI-compatible endpoint on
    127.0.0.1 (`rlhf.demo.judge`), wrong on a `judge_flip` share of the pairs."""
    judge_flip: float = 0.2
    """`ai_feedback`: the share of pairs the simulated judge prefers the worse answer of (seeded by
    `pipeline.feedback.seed`; the same pair is flipped in both orders)."""
    data_only: bool = False
    """Write the task's data (`<output_dir>/data/*.jsonl`) and base model, then stop: for running the
    task through `rlhf pipeline` with another model (e.g. examples/pipeline_tinystories.yaml)."""

    def __post_init__(self) -> None:
        if self.seeds < 1:
            raise ConfigError(f"`seeds` must be at least 1, got {self.seeds}")
        if not 0.0 <= self.judge_flip <= 1.0:
            raise ConfigError(f"`judge_flip` must be in [0, 1], got {self.judge_flip}")


def write_task_data(cfg: DemoTaskConfig, data_dir: Path) -> dict[str, str]:
    """The demo's files: demonstrations, candidate prompts, PPO prompts, held-out prompts, and for
    the alignment tax the held-out documents' demonstrations and the documents as plain text."""
    from rlhf.demo.task import document_of, make_split

    splits = {
        "sft": (cfg.sft_examples, 1),
        "candidates": (cfg.candidate_prompts, 2),
        "ppo": (cfg.ppo_prompts, 3),
        "eval": (cfg.eval_prompts, 4),
    }
    paths: dict[str, str] = {}
    seen: set[str] = set()
    for name, (count, offset) in splits.items():
        # Every split's documents are new to the splits before it (the held-out ones above all).
        rows = [
            r for r in make_split(2 * count + 50, seed=cfg.seed * 100 + offset) if r["prompt"] not in seen
        ]
        rows = rows[:count]
        seen.update(r["prompt"] for r in rows)
        if name == "eval":  # never trained on: what the alignment tax is measured on
            demos = [{"prompt": r["prompt"], "completion": r["completion"]} for r in rows]
            paths["heldout_demonstrations"] = _write_rows(data_dir / "heldout_demonstrations.jsonl", demos)
            texts = [{"text": document_of(r["prompt"])} for r in rows]
            paths["documents"] = _write_rows(data_dir / "documents.jsonl", texts)
        if name != "sft":
            rows = [{"prompt": r["prompt"]} for r in rows]
        paths[name] = _write_rows(data_dir / f"{name}.jsonl", rows)
    return paths


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> str:
    """`rows` as JSONL at `path`, rewritten only when different (the pipeline notices changed files
    by size and time); returns the path."""
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return str(path)


def build_base_model(cfg: DemoTaskConfig, directory: Path) -> str:
    """The demo's base model: a tokenizer learned from the task's text, a small random-weight Llama."""
    from rlhf.demo.task import tokenizer_text
    from rlhf.models.tiny import build_tiny_tokenizer, save_tiny

    made_with = json.dumps([cfg.seed, cfg.hidden_size, cfg.layers, cfg.heads, cfg.vocab_size])
    marker = directory / "demo_base.json"
    if (directory / "model.safetensors").is_file() and marker.is_file() and marker.read_text() == made_with:
        return str(directory)  # kept as it is, so the pipeline sees the same files and skips finished stages
    text = tokenizer_text()
    tokenizer = build_tiny_tokenizer(text, cfg.vocab_size)
    save_tiny(
        directory,
        seed=cfg.seed,
        tokenizer=tokenizer,
        hidden_size=cfg.hidden_size,
        intermediate_size=3 * cfg.hidden_size,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        num_key_value_heads=cfg.heads,
    )
    marker.write_text(made_with)
    return str(directory)


def demo_config_for_run(cfg: DemoConfig) -> PipelineConfig:
    """The pipeline config with the demo's data and base model written and filled in."""
    p = cfg.pipeline
    run = Path(p.output_dir)
    paths = write_task_data(cfg.task, run / "data")
    base = build_base_model(cfg.task, run / "base")

    def with_data(section, path):
        return dataclasses.replace(section, data=dataclasses.replace(section.data, path=path))

    sft = with_data(p.sft, paths["sft"])
    sft = dataclasses.replace(sft, model=dataclasses.replace(sft.model, path=base))
    return dataclasses.replace(
        p,
        sft=sft,
        generate=with_data(p.generate, paths["candidates"]),
        ppo=with_data(p.ppo, paths["ppo"]),
        eval=with_data(p.eval, paths["eval"]),
        tax=p.tax
        if p.tax.wanted
        else dataclasses.replace(p.tax, texts=[paths["heldout_demonstrations"], paths["documents"]]),
    )


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Write the task, make the base model, run the pipeline; print the summary table and the report's
    path. With `seeds` > 1, the sweep over task seeds (`rlhf.demo.sweep`)."""
    if cfg.seeds != 1:
        from rlhf.demo.sweep import run_sweep

        return run_sweep(dataclasses.replace(cfg, seeds=1), cfg.seeds, run_demo)
    from rlhf.demo.checks import checks_line, run_checks
    from rlhf.pipeline.run import run_pipeline
    from rlhf.report.headline import headline_table

    pipeline = demo_config_for_run(cfg)
    if cfg.data_only:
        print(
            f"[demo] task data in {Path(pipeline.output_dir) / 'data'}, base model in {pipeline.sft.model.path}"
        )
        return {}
    if cfg.ai_feedback:
        from rlhf.demo.judge import SIMULATED_MODEL, simulated_judge
        from rlhf.judge.config import JudgeConfig

        with simulated_judge(cfg.judge_flip, pipeline.feedback.seed) as server:
            judge = JudgeConfig(url=server.url, model_name=SIMULATED_MODEL, api_key_env=None, cache=None)
            feedback = dataclasses.replace(pipeline.feedback, source="judge", judge=judge)
            summary = run_pipeline(dataclasses.replace(pipeline, feedback=feedback))
    else:
        summary = run_pipeline(pipeline)
    checks = run_checks(pipeline)
    print()
    print(headline_table(summary["headline"]))
    print(checks_line(checks))
    print(
        f"[demo] {summary['seconds']:.0f} s; run directory {pipeline.output_dir}; report: {summary['report']}"
    )
    return summary
