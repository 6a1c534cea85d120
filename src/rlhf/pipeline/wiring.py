"""How each stage's config is wired into the pipeline's run directory: its data, the models it reads
and where it writes, from the stages before it. Each function returns the stage's full config."""

from __future__ import annotations

import dataclasses
from typing import Any

from rlhf.config.core import to_dict
from rlhf.config.parts import DataConfig
from rlhf.pipeline import feedback as fb
from rlhf.pipeline.checks import replaced_by_input
from rlhf.pipeline.config import PipelineConfig
from rlhf.pipeline.layout import Paths, jsonl_ready
from rlhf.rewards.config import RewardSourceConfig, RewardSourcesConfig


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
    return _wired(p.cfg.sft, output_dir=str(p.stage("sft")), prompt=p.cfg.prompt)


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
        output_dir=str(p.stage("reward")),
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
        output_dir=str(p.stage("ppo")),
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
        output_dir=str(p.stage("dpo")),
        prompt=p.cfg.prompt,
        **changes,
    )


def rrhf_config(p: Paths):
    changes = {} if replaced_by_input("generate", p.cfg) else {"data__path": str(p.candidates)}
    return _wired(
        p.cfg.rrhf, model__path=p.sft_model, reward__model=p.reward_model,
        output_dir=str(p.stage("rrhf")), prompt=p.cfg.prompt, **changes,
    )  # fmt: skip


def rejection_generate_config(p: Paths):
    from rlhf.generate.config import GenerateConfig

    rs = p.cfg.rejection_sampling
    # The reward model scores the draws in batches of the sampling's size.
    reward = RewardSourcesConfig(model=p.reward_model, batch_size=rs.sampling.batch_size)
    section = GenerateConfig(
        model=dataclasses.replace(p.cfg.sft.model, path=p.sft_model, tokenizer=None),
        data=rejection_prompts(p.cfg), prompt=p.cfg.prompt, sampling=rs.sampling, best_of=rs.n,
        reward=reward, output=str(p.best_of_n_file), progress=False,
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
        output_dir=str(p.stage("rejection_sampling") / "sft"), prompt=p.cfg.prompt,
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
        reward__model=p.reward_model,
        gold=p.cfg.gold,
        output_dir=str(p.stage("eval") if method == first else p.stage("eval") / method),
        prompt=p.cfg.prompt,
        best_of=best_of,
    )
    return _engine(p, section)


def eval_stage_config(p: Paths) -> dict[str, Any]:
    configs = {m: to_dict(eval_config(p, m)) for m in p.cfg.methods}
    return {**configs, "tax": to_dict(p.cfg.tax)} if p.cfg.tax.wanted else configs


def eval_reward_config(p: Paths):
    from rlhf.reward.config import EvalRewardConfig

    data = p.cfg.eval_reward_data
    if not data.path:
        gold_pairs = p.stage("feedback") / fb.HELDOUT_GOLD_FILE
        path = gold_pairs if jsonl_ready(gold_pairs) is None else p.stage("feedback") / fb.HELDOUT_FILE
        data = dataclasses.replace(data, path=str(path))
    return EvalRewardConfig(
        reward=RewardSourcesConfig(model=p.reward_model),
        data=data,
        output=str(p.run / "reward_eval" / "eval.json"),
        progress=False,
    )
