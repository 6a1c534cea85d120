"""The pipeline's stages: how each is wired to the run directory, what it must leave behind, how it runs.

A stage is finished when its outputs are there and readable (the files themselves are checked,
not only the folder) and the fingerprint it recorded (its resolved config plus the fingerprints
of the stages it read from) is the one it would have now.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf.config.core import ConfigError, to_dict
from rlhf.config.parts import DataConfig
from rlhf.pipeline import feedback as fb
from rlhf.pipeline.config import METHODS, FeedbackConfig, PipelineConfig
from rlhf.rewards.config import RewardSourceConfig

WEIGHT_FILES = (
    "model.safetensors",
    "adapter_model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
)


def model_ready(directory: Path) -> str | None:
    """None when `directory` holds a loadable saved model (config and weights), else what is missing."""
    if not (directory / "config.json").is_file() and not (directory / "adapter_config.json").is_file():
        return f"{directory}/config.json"
    if not any(
        (directory / name).is_file() and (directory / name).stat().st_size > 0 for name in WEIGHT_FILES
    ):
        return f"{directory}/model.safetensors"
    return None


def json_ready(path: Path) -> str | None:
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return str(path)
    return None


def jsonl_ready(path: Path) -> str | None:
    """None when the JSONL file exists, is not empty and every line parses."""
    try:
        fb.read_jsonl(path)[0]
    except (OSError, ValueError, IndexError):
        return str(path)
    return None


@dataclass
class Paths:
    """Where every stage's outputs live, and the models the later stages read."""

    run: Path
    cfg: PipelineConfig

    def stage(self, name: str) -> Path:
        return self.run / name

    @property
    def sft_model(self) -> str:
        return self.cfg.sft_model or str(self.run / "sft" / "model")

    @property
    def start_policy(self) -> str:
        """The policy that samples candidates and that PPO starts from (an earlier round's, or SFT)."""
        return self.cfg.start_policy or self.sft_model

    @property
    def candidates(self) -> Path:
        return self.run / "generate" / "candidates.jsonl"

    @property
    def reward_model(self) -> str:
        return self.cfg.reward_model or str(self.run / "reward" / "model")

    def policy(self, method: str | None = None) -> str:
        """The policy a method trained (default: the first of `methods`); best-of-N's is the SFT model."""
        method = method or self.cfg.methods[0]
        if method == "best_of_n":
            return self.sft_model
        if method == "rejection_sampling":
            return str(self.run / "rejection_sampling" / "sft" / "model")
        return str(self.run / method / "policy")

    @property
    def best_of_n_file(self) -> Path:
        return self.run / "rejection_sampling" / "best_of_n.jsonl"


def _wired(section: Any, **changes: Any) -> Any:
    """`section` with dotted fields replaced (`model__path=...` sets `model.path`)."""
    grouped: dict[str, dict[str, Any]] = {}
    flat: dict[str, Any] = {}
    for key, value in changes.items():
        head, _, rest = key.partition("__")
        if rest:
            grouped.setdefault(head, {})[rest] = value
        else:
            flat[key] = value
    for head, sub in grouped.items():
        flat[head] = _wired(getattr(section, head), **sub)
    return dataclasses.replace(section, **flat)


def _engine(p: Paths, section: Any, *, rollout: bool = False) -> Any:
    """`section` with the pipeline's `engine` and `vllm` copied in (into `rollout` for PPO), when set."""
    changes: dict[str, Any] = {}
    if p.cfg.engine is not None:
        changes["engine"] = p.cfg.engine
    if p.cfg.vllm is not None:
        changes["vllm"] = p.cfg.vllm
    if not changes:
        return section
    if rollout:
        return dataclasses.replace(section, rollout=dataclasses.replace(section.rollout, **changes))
    return dataclasses.replace(section, **changes)


def sft_config(p: Paths):
    return _wired(p.cfg.sft, logging__output_dir=str(p.stage("sft")), prompt=p.cfg.prompt)


def generate_config(p: Paths):
    section = _wired(
        p.cfg.generate, model__path=p.start_policy, output=str(p.candidates), prompt=p.cfg.prompt
    )
    return _engine(p, section)


def reward_config(p: Paths):
    cfg = p.cfg.reward
    held = p.stage("feedback") / fb.HELDOUT_FILE
    return _wired(
        cfg,
        model__path=p.cfg.reward_base or p.sft_model,
        data__path=str(p.stage("feedback") / fb.TRAIN_FILE),
        # No held-out pairs survived (all of a held-out prompt's candidates alike): no eval split.
        eval__path=str(held) if jsonl_ready(held) is None else None,
        eval__fraction=0.0,
        logging__output_dir=str(p.stage("reward")),
        prompt=p.cfg.prompt,
    )


def ppo_config(p: Paths):
    cfg = p.cfg.ppo
    sources = [s for s in cfg.reward.sources if s.name != "gold"]
    if p.cfg.gold:
        sources.append(RewardSourceConfig(function=p.cfg.gold, weight=0.0, name="gold"))
    # The reward model goes in through the `reward.model` shortcut (one source of weight 1).
    reward = dataclasses.replace(cfg.reward, model=p.reward_model, function=None, url=None, sources=sources)
    section = _wired(
        cfg,
        model__path=p.start_policy,
        reference=p.sft_model if p.start_policy != p.sft_model else None,
        reward=reward,
        logging__output_dir=str(p.stage("ppo")),
        prompt=p.cfg.prompt,
    )
    return _engine(p, section, rollout=True)


def dpo_config(p: Paths):
    feedback = p.stage("feedback")
    outside = replaced_by_input("feedback", p.cfg)
    held = feedback / fb.HELDOUT_FILE
    changes: dict[str, Any] = {}
    if not outside:  # the same feedback the reward model learned from, and its held-out pairs
        changes = {"data__path": str(feedback / fb.TRAIN_FILE), "eval__fraction": 0.0,
                   "eval__path": str(held) if jsonl_ready(held) is None else None}  # fmt: skip
    return _wired(
        p.cfg.dpo,
        model__path=p.sft_model,
        logging__output_dir=str(p.stage("dpo")),
        prompt=p.cfg.prompt,
        **changes,
    )


def rrhf_config(p: Paths):
    changes = {} if replaced_by_input("generate", p.cfg) else {"data__path": str(p.candidates)}
    return _wired(
        p.cfg.rrhf, model__path=p.sft_model, reward_model=p.reward_model,
        logging__output_dir=str(p.stage("rrhf")), prompt=p.cfg.prompt, **changes,
    )  # fmt: skip


def rejection_generate_config(p: Paths):
    from rlhf.generation.config import GenerateConfig

    rs = p.cfg.rejection_sampling
    section = GenerateConfig(
        model=dataclasses.replace(p.cfg.sft.model, path=p.sft_model, tokenizer=None),
        data=rejection_prompts(p.cfg), prompt=p.cfg.prompt,
        sampling=dataclasses.replace(rs.sampling, num_samples=1), best_of=rs.n, reward_model=p.reward_model,
        output=str(p.best_of_n_file), progress=False,
    )  # fmt: skip
    return _engine(p, section)


def rejection_prompts(cfg: PipelineConfig) -> DataConfig:
    """`rejection_sampling.data`, or the PPO prompts (cut to `rejection_sampling.data.limit` if set)."""
    rs = cfg.rejection_sampling.data
    if rs.path:
        return rs
    return dataclasses.replace(cfg.ppo.data, limit=rs.limit if rs.limit is not None else cfg.ppo.data.limit)


def rejection_sft_config(p: Paths):
    return _wired(
        p.cfg.rejection_sampling.sft, model__path=p.sft_model, data__path=str(p.best_of_n_file),
        logging__output_dir=str(p.stage("rejection_sampling") / "sft"), prompt=p.cfg.prompt,
    )  # fmt: skip


def rejection_sampling_config(p: Paths) -> dict[str, Any]:
    sft = to_dict(rejection_sft_config(p))
    # The SFT data is this stage's own output: named, not fingerprinted by its size and time.
    sft["data"]["path"] = "(this stage's best_of_n.jsonl)"
    return {"generate": to_dict(rejection_generate_config(p)), "sft": sft}


def eval_config(p: Paths, method: str | None = None):
    """The evaluation of `method` (default: the first): the first against SFT in `eval/`, the others
    alone (their KL from SFT measured) in `eval/<method>/`; best-of-N answers with n samples."""
    first = p.cfg.methods[0]
    method = method or first
    best_of = p.cfg.best_of_n.n if method == "best_of_n" else 1
    section = _wired(
        p.cfg.eval,
        model__path=p.policy(method),
        baseline=p.sft_model if method == first else None,
        reference=p.sft_model if best_of == 1 else None,  # best-of-N's KL is the analytic one
        reward=p.reward_model,
        gold=p.cfg.gold,
        output_dir=str(p.stage("eval") if method == first else p.stage("eval") / method),
        prompt=p.cfg.prompt,
        best_of=best_of,
    )
    return _engine(p, section)


def eval_stage_config(p: Paths) -> dict[str, Any]:
    return {m: to_dict(eval_config(p, m)) for m in p.cfg.methods}


def eval_reward_config(p: Paths):
    from rlhf.reward.config import EvalRewardConfig

    data = p.cfg.eval_reward_data
    if not data.path:
        gold_pairs = p.stage("feedback") / fb.HELDOUT_GOLD_FILE
        path = gold_pairs if jsonl_ready(gold_pairs) is None else p.stage("feedback") / fb.HELDOUT_FILE
        data = dataclasses.replace(data, path=str(path))
    return EvalRewardConfig(
        model=p.reward_model, data=data, output=str(p.run / "reward_eval" / "eval.json"), progress=False
    )


# ----------------------------------------------------------------------------- running
# The pipeline runs a stage again from its start when it runs it at all (its inputs changed, or it
# never finished): checkpoints an earlier attempt left in the stage's directory are replaced
# (`overwrite=True`), as the stage's outputs are.


def run_sft_stage(p: Paths) -> dict[str, Any]:
    from rlhf.sft import run_sft

    return run_sft(sft_config(p), overwrite=True).summary


def run_generate_stage(p: Paths) -> dict[str, Any]:
    from rlhf.generation.run import run_generate

    return run_generate(generate_config(p))


def run_feedback_stage(p: Paths) -> dict[str, Any]:
    f = p.cfg.feedback
    out = p.stage("feedback")
    if f.source == "file":
        assert f.path, "the pipeline config requires feedback.path with source: file"
        return fb.split_file(f.path, out, heldout_fraction=f.heldout_fraction, seed=f.seed)
    from rlhf.rewards.sources import load_function

    if f.source == "people":
        from rlhf.pipeline.people import collect

        gold = load_function(p.cfg.gold) if p.cfg.gold else None
        stats = collect(out, p.candidates, f, gold, lambda: _selection(f))
    else:
        stats = _simulated(p, out, f, load_function)
    if p.cfg.earlier_feedback:
        stats.update(fb.add_earlier(out, Path(p.cfg.earlier_feedback)))
        fb.write_stats(out, stats)
    return stats


def _simulated(p: Paths, out: Path, f: FeedbackConfig, load_function) -> dict[str, Any]:
    assert p.cfg.gold, "the pipeline config requires `gold` with feedback source: simulate"
    return fb.simulate(
        p.candidates,
        load_function(p.cfg.gold),
        out,
        labelers=f.labelers,
        temperature=f.temperature,
        resolve=f.resolve,
        heldout_fraction=f.heldout_fraction,
        seed=f.seed,
        selection=_selection(f),
    )


def _selection(f: FeedbackConfig) -> fb.Selection | None:
    """`feedback.select` as the feedback stage's selection (its reward sources loaded)."""
    if f.select == "all":
        return None
    from rlhf.rewards.sources import FunctionSource, RewardModelSource

    sources = [
        RewardModelSource(spec) if Path(spec).is_dir() else FunctionSource(spec) for spec in f.select_with
    ]
    assert f.budget is not None, "FeedbackConfig requires a budget unless select is all"
    return fb.Selection(f.select, f.budget, f.per_prompt, sources)


def run_reward_stage(p: Paths) -> dict[str, Any]:
    from rlhf.reward.evaluate import run_eval_reward
    from rlhf.reward.train import run_reward

    summary = dict(run_reward(reward_config(p), overwrite=True).summary)
    if p.cfg.reward_ensemble > 1:
        from rlhf.pipeline.ensemble import train_ensemble

        train = p.stage("feedback") / fb.TRAIN_FILE
        summary["ensemble"] = train_ensemble(
            reward_config(p), train, p.stage("reward"), p.cfg.reward_ensemble, p.cfg.feedback.seed
        )
    held = eval_reward_config(p)
    if jsonl_ready(Path(held.data.path)) is None:
        summary["heldout"] = run_eval_reward(held)
    else:  # nothing held out to score: say so where the report and the output check look
        out = Path(held.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"note": f"no held-out feedback in {held.data.path}"}) + "\n")
    # This round's new held-out pairs, judged by gold when there is one, else by the labelers.
    new = [p.stage("feedback") / f"{fb.NEW_PREFIX}{name}" for name in (fb.HELDOUT_GOLD_FILE, fb.HELDOUT_FILE)]
    new_pairs = next((path for path in new if jsonl_ready(path) is None), None)
    if p.cfg.earlier_feedback and p.cfg.reward_base and new_pairs is not None:
        summary["on_new_samples"] = _on_new_samples(p, held, new_pairs)
    return summary


def _on_new_samples(p: Paths, held: Any, new_pairs: Path) -> dict[str, Any]:
    """The earlier round's reward model and this round's on this round's new held-out pairs: how
    blind the old one was to the current policy's samples, and what retraining fixed. Written to
    `reward_eval/new_samples.json`, with the file it scored."""
    from rlhf.reward.evaluate import run_eval_reward

    out = p.run / "reward_eval"
    result = {}
    for name, model in (("before", p.cfg.reward_base), ("after", p.reward_model)):
        cfg = dataclasses.replace(
            held, model=model, data=dataclasses.replace(held.data, path=str(new_pairs)),
            output=str(out / f"new_samples_{name}.json"),
        )  # fmt: skip
        result[name] = {key: run_eval_reward(cfg).get(key) for key in ("accuracy", "pairs", "ece", "data")}
    (out / "new_samples.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def run_ppo_stage(p: Paths) -> dict[str, Any]:
    from rlhf.ppo import run_ppo

    return run_ppo(ppo_config(p), overwrite=True).summary


def run_dpo_stage(p: Paths) -> dict[str, Any]:
    from rlhf.dpo import run_dpo

    return run_dpo(dpo_config(p), overwrite=True).summary


def run_rrhf_stage(p: Paths) -> dict[str, Any]:
    from rlhf.rrhf import run_rrhf

    return run_rrhf(rrhf_config(p), overwrite=True).summary


def run_best_of_n_stage(p: Paths) -> dict[str, Any]:
    """Nothing to train: best-of-N is the SFT policy and the reward model, used at answer time."""
    out = p.stage("best_of_n")
    out.mkdir(parents=True, exist_ok=True)
    note = {"policy": p.sft_model, "reward_model": p.reward_model, "n": p.cfg.best_of_n.n}
    (out / "summary.json").write_text(json.dumps(note, indent=2) + "\n", encoding="utf-8")
    return note


def run_rejection_sampling_stage(p: Paths) -> dict[str, Any]:
    from rlhf.generation.run import run_generate
    from rlhf.sft import run_sft

    drafts = run_generate(rejection_generate_config(p))
    summary = {"generate": drafts, "sft": run_sft(rejection_sft_config(p), overwrite=True).summary}
    (p.stage("rejection_sampling") / "summary.json").write_text(
        json.dumps(summary, indent=2, default=str) + "\n"
    )
    return summary


def run_eval_stage(p: Paths) -> dict[str, Any]:
    from rlhf.eval.policy import run_eval_policy
    from rlhf.pipeline.compare import write_comparison

    results = {m: run_eval_policy(eval_config(p, m)) for m in p.cfg.methods}
    write_comparison(p.stage("eval"), list(p.cfg.methods), method_compute(p))
    return results[p.cfg.methods[0]]


def method_compute(p: Paths) -> dict[str, dict[str, Any]]:
    """What each policy cost to make, from the pipeline's own timings: the stage's seconds, and
    whether it needed the reward model (and so the feedback, generate and reward stages)."""
    from rlhf.pipeline.state import read_state

    state = read_state(p.run)
    seconds = lambda name: (state.get(name) or {}).get("seconds")  # noqa: E731
    out = {"sft": {"seconds": seconds("sft"), "uses_reward_model": False}}
    for m in p.cfg.methods:
        out[m] = {"seconds": seconds(m), "uses_reward_model": m != "dpo"}
    return out


def run_report_stage(p: Paths) -> dict[str, Any]:
    from rlhf.report import write_report

    return {"report": str(write_report(p.run))}


def _reward_settings(p: Paths) -> Any:
    settings = to_dict(reward_config(p))
    return settings if p.cfg.reward_ensemble == 1 else {"reward": settings, "ensemble": p.cfg.reward_ensemble}


def _reward_outputs(p: Paths) -> list[str | None]:
    from rlhf.pipeline.ensemble import ensemble_dirs

    members = ensemble_dirs(p.stage("reward"), p.cfg.reward_ensemble)
    return [model_ready(p.stage("reward") / "model"), json_ready(p.run / "reward_eval" / "eval.json"),
            *(model_ready(m) for m in members)]  # fmt: skip


def _feedback_settings(p: Paths) -> dict[str, Any]:
    return {"feedback": to_dict(p.cfg.feedback), "earlier_feedback": p.cfg.earlier_feedback}


@dataclass(frozen=True)
class Stage:
    name: str
    reads: tuple[str, ...]
    """Stages whose outputs this one reads (their fingerprints are part of its own)."""
    config: Callable[[Paths], Any] | None
    outputs: Callable[[Paths], list[str | None]]
    run: Callable[[Paths], dict[str, Any]]


def _feedback_outputs(p: Paths) -> list[str | None]:
    d = p.stage("feedback")
    return [jsonl_ready(d / fb.TRAIN_FILE), json_ready(d / fb.STATS_FILE)]


STAGE_LIST = (
    Stage("sft", (), sft_config, lambda p: [model_ready(p.stage("sft") / "model")], run_sft_stage),
    Stage("generate", ("sft",), generate_config, lambda p: [jsonl_ready(p.candidates)], run_generate_stage),
    Stage("feedback", ("generate",), _feedback_settings, _feedback_outputs, run_feedback_stage),
    Stage(
        "reward",
        ("sft", "feedback"),
        _reward_settings,
        _reward_outputs,
        run_reward_stage,
    ),
    Stage(
        "ppo",
        ("sft", "reward"),
        ppo_config,
        lambda p: [model_ready(Path(p.policy("ppo"))), json_ready(p.stage("ppo") / "summary.json")],
        run_ppo_stage,
    ),
    Stage(
        "dpo",
        ("sft", "feedback"),
        dpo_config,
        lambda p: [model_ready(Path(p.policy("dpo"))), json_ready(p.stage("dpo") / "summary.json")],
        run_dpo_stage,
    ),
    Stage(
        "rrhf",
        ("sft", "generate", "reward"),
        rrhf_config,
        lambda p: [model_ready(Path(p.policy("rrhf"))), json_ready(p.stage("rrhf") / "summary.json")],
        run_rrhf_stage,
    ),
    Stage(
        "best_of_n",
        ("sft", "reward"),
        lambda p: p.cfg.best_of_n,
        lambda p: [json_ready(p.stage("best_of_n") / "summary.json")],
        run_best_of_n_stage,
    ),
    Stage(
        "rejection_sampling",
        ("sft", "reward"),
        rejection_sampling_config,
        lambda p: [
            model_ready(Path(p.policy("rejection_sampling"))),
            json_ready(p.stage("rejection_sampling") / "summary.json"),
        ],
        run_rejection_sampling_stage,
    ),
    Stage(
        "eval",
        ("sft", "reward", *METHODS),
        eval_stage_config,
        lambda p: (
            [json_ready(p.stage("eval") / "eval.json"), json_ready(p.stage("eval") / "comparison.json")]
            + [json_ready(p.stage("eval") / m / "eval.json") for m in p.cfg.methods[1:]]
        ),
        run_eval_stage,
    ),
    Stage(
        "report",
        ("sft", "feedback", "reward", *METHODS, "eval"),
        None,
        lambda p: [None if (p.run / "report.html").is_file() else str(p.run / "report.html")],
        run_report_stage,
    ),
)
STAGE_BY_NAME = {s.name: s for s in STAGE_LIST}


def replaced_by_input(name: str, cfg: PipelineConfig) -> str | None:
    """The outside input standing in for stage `name`, if the config gives one."""
    if name == "sft" and cfg.sft_model:
        return f"sft_model: {cfg.sft_model}"
    if name in ("generate", "feedback", "reward") and cfg.reward_model:
        return f"reward_model: {cfg.reward_model}"
    if name == "generate" and cfg.feedback.source == "file":
        return f"feedback.path: {cfg.feedback.path}"
    return None


def config_dict(stage: Stage, p: Paths) -> Any:
    if stage.config is None:
        return None
    cfg = stage.config(p)
    return to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg


def check_data(cfg: PipelineConfig) -> None:
    """Stage data every run needs, checked before anything trains (one-line errors)."""
    needs = [
        ("sft", cfg.sft.data, "sft.data.path", "the demonstrations", not cfg.sft_model),
        (
            "generate",
            cfg.generate.data,
            "generate.data.path",
            "the prompts to draw candidates for",
            not cfg.reward_model and cfg.feedback.source == "simulate",
        ),
        ("ppo", cfg.ppo.data, "ppo.data.path", "the PPO prompts", "ppo" in cfg.methods),
        (
            "dpo",
            cfg.dpo.data,
            "dpo.data.path",
            "preference pairs (the feedback stage is replaced)",
            "dpo" in cfg.methods and bool(replaced_by_input("feedback", cfg)),
        ),
        (
            "rrhf",
            cfg.rrhf.data,
            "rrhf.data.path",
            "responses or prompts (the generate stage is replaced)",
            "rrhf" in cfg.methods and bool(replaced_by_input("generate", cfg)),
        ),
        (
            "rejection_sampling",
            cfg.rejection_sampling.data if cfg.rejection_sampling.data.path else cfg.ppo.data,
            "rejection_sampling.data.path (or ppo.data.path)",
            "prompts",
            "rejection_sampling" in cfg.methods,
        ),
        ("eval", cfg.eval.data, "eval.data.path", "the held-out prompts", True),
    ]
    if (
        cfg.feedback.source == "simulate"
        and not cfg.gold
        and "feedback" in cfg.stages
        and not cfg.reward_model
    ):
        raise ConfigError(
            "`feedback.source: simulate` needs `gold: module:function` to judge by; "
            "or use `feedback.source: file` with people's preferences (e.g. `rlhf label export`)"
        )
    for name, data, key, what, needed in needs:
        if needed and name in cfg.stages and isinstance(data, DataConfig) and not data.path:
            raise ConfigError(f"`{key}` is not set: the {name} stage needs {what}")
