"""`rlhf ppo`: optimize the policy against a reward with PPO on a KL leash, in the order it happens.

each step:  prompts -> sample K completions each (KV-cached generate)
            -> reward r(x, y) from the sources (reward model, function, HTTP), normalized, clipped
            -> one policy pass (old log-probs + values), one reference pass (adapter off)
            -> per-token KL penalty, advantages (GAE with the critic, or REINFORCE / RLOO / GRPO)
            -> `ppo_epochs` passes of clipped policy + value updates over minibatches
            -> β update (adaptive controller), logs, samples table, checkpoint
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rlhf.ppo.config import PpoConfig


@dataclass
class PpoResult:
    """What `run_ppo` hands back."""

    summary: dict[str, Any]
    """What the run measured (also in `<output_dir>/summary.json`)."""
    policy: torch.nn.Module
    """The trained `PolicyValue` (LoRA merged into its LM unless QLoRA)."""
    tokenizer: Any
    """The policy's tokenizer."""


def load_prompt_ids(cfg: PpoConfig, tokenizer) -> tuple[list, list[list[int]], str]:
    """(prompts as in the data, their rendered token ids, a summary line)."""
    from rlhf.data import PromptRenderer, encode_prompt, load_records, prompts_of

    loaded = load_records(cfg.data, expect="prompt")
    records = prompts_of(loaded)
    renderer = PromptRenderer(cfg.prompt, tokenizer)
    limit = cfg.data.max_prompt_length or max(1, cfg.data.max_length - cfg.rollout.sampling.max_new_tokens)
    ids = [encode_prompt(tokenizer, renderer.render(r.prompt), limit) for r in records]
    cut = sum(len(x) >= limit for x in ids)
    summary = (
        f"{loaded.report.summary()}; format `{loaded.format}`; {len(records)} prompts, at most {limit} tokens"
    )
    return [r.prompt for r in records], ids, summary + (f" ({cut} at the limit)" if cut else "")


def ptx_stream(cfg: PpoConfig, tokenizer, accelerator, start: int):
    """Endless PPO-ptx batches (input_ids, attention_mask, labels, count = the global target tokens)."""
    from rlhf.data import PromptRenderer, load_records
    from rlhf.sft.examples import collate, encode_demonstrations, to_rows
    from rlhf.training.batches import BatchStream

    data = cfg.loss.ptx_data
    records = load_records(data, expect="sft").demonstrations()
    examples, _ = encode_demonstrations(
        records,
        PromptRenderer(cfg.prompt, tokenizer),
        tokenizer,
        data.max_length,
        data.max_prompt_length,
        True,
    )
    rows = to_rows(examples, data.max_length, packing=False)
    stream = BatchStream(
        len(rows), cfg.loss.ptx_batch_size, num_processes=accelerator.num_processes,
        process_index=accelerator.process_index, seed=cfg.seed, start=start,
    )  # fmt: skip
    for indices in stream:
        batch = collate([rows[i] for i in indices], tokenizer.pad_token_id, packed=False)
        count = sum(rows[i].num_targets for i in indices)
        total = accelerator.reduce(torch.tensor(count, device=accelerator.device), reduction="sum")
        yield {**{k: v.to(accelerator.device) for k, v in batch.items()}, "count": int(total)}


def run_ppo(cfg: PpoConfig, *, resume: str | bool | None = None, generator=None) -> PpoResult:
    """Train the policy with PPO (or a critic-free estimator); returns the summary and the policy.

    `resume`: True continues from the newest checkpoint of `logging.output_dir`, a path from that
    checkpoint. `generator`: a replacement generation engine (see `rlhf.ppo.rollout.Generator`).
    """
    from accelerate.utils import gather

    from rlhf.config.core import ConfigError
    from rlhf.losses.ppo import MovingBaseline, make_kl_controller
    from rlhf.models import load_tokenizer, trainable_parameter_summary
    from rlhf.ppo.rollout import HFGenerator, sample_rollout, score_rollout
    from rlhf.ppo.setup import build_models, prepare_models
    from rlhf.ppo.update import UpdateState, compute_advantages, make_reduce_sum, ppo_update
    from rlhf.rewards.function import build_reward_function
    from rlhf.tracking import MetricsLogger, progress_bar
    from rlhf.training.batches import BatchStream
    from rlhf.training.loop import start_stage

    if not cfg.reward.all_sources():
        raise ConfigError(
            "rlhf ppo needs a reward: set reward.model, reward.function, reward.url or reward.sources"
        )
    # Checked here, not when the config loads: `rlhf pipeline` fills `reward.model` in itself.
    if cfg.critic.init_from_reward and not cfg.reward.model:
        raise ConfigError("`critic.init_from_reward` needs `reward.model`")
    started = time.time()
    # Accumulation 1: the update accumulates a minibatch's micro-batches itself.
    accumulation_off = dataclasses.replace(cfg.optimizer, gradient_accumulation_steps=1)
    accelerator, say, run_dir = start_stage("ppo", cfg, accumulation_off, mixed_precision=cfg.mixed_precision)
    main, device = accelerator.is_main_process, accelerator.device

    tokenizer = load_tokenizer(cfg.model, padding_side="left")
    prompts, prompt_ids, data_summary = load_prompt_ids(cfg, tokenizer)
    say(f"[data] {data_summary}")
    reward_fn = build_reward_function(cfg.reward, device=cfg.reward.device or device)
    say(
        "[reward] "
        + ", ".join(f"{s.name} (weight {s.weight:g}, normalize {s.normalize})" for s in reward_fn.sources)
    )

    built = build_models(cfg, tokenizer, device)
    trainable, total = trainable_parameter_summary(built.policy)
    say(f"[model] {cfg.model.path}: {total:,} parameters, {trainable:,} trainable (peft: {cfg.peft.method})")
    for note in built.notes:
        say(f"[model] {note}")

    models = prepare_models(cfg, accelerator, built, tokenizer.pad_token_id)
    unwrapped, critic_w = accelerator.unwrap_model(models.policy), models.critic

    kl_ctl = make_kl_controller(cfg.kl.controller, cfg.kl.coef, cfg.kl.target, cfg.kl.horizon)
    state = UpdateState(baseline=MovingBaseline(cfg.advantage.baseline_decay))
    from rlhf.ppo.checkpoint import restore, save

    start_step, history = restore(
        accelerator, run_dir, resume, cfg, unwrapped, critic_w, models, kl_ctl, state, reward_fn, say
    )
    if main:
        _trim_samples(run_dir / "samples.jsonl", start_step)
    if start_step == 0:
        # Sampling differs per process (their prompts differ anyway); the weights were made above.
        torch.manual_seed(cfg.seed + 1 + accelerator.process_index)
    stream = BatchStream(
        len(prompts), cfg.rollout.prompts_per_step, num_processes=accelerator.num_processes,
        process_index=accelerator.process_index, seed=cfg.seed, start=start_step,
    )  # fmt: skip
    ptx_batches = (
        ptx_stream(cfg, tokenizer, accelerator, state.ptx_position) if cfg.loss.ptx_coef > 0 else None
    )
    generator = generator or HFGenerator(tokenizer, dataclasses.replace(cfg.rollout.sampling, seed=None))
    eos_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.pad_token_id

    reduce_sum = make_reduce_sum(accelerator)

    def gather_all(t: torch.Tensor) -> torch.Tensor:
        return t if accelerator.num_processes == 1 else gather(t.to(device)).cpu()

    logger = MetricsLogger(run_dir, tensorboard=cfg.logging.tensorboard, enabled=main)
    bar = progress_bar(cfg.steps, "ppo", enabled=cfg.logging.progress and main)
    bar.update(start_step)
    with logger:
        for step in range(start_step + 1, cfg.steps + 1):
            t0 = time.time()
            indices = next(iter(stream))
            generator.sync(unwrapped.lm)
            rollout = sample_rollout(
                generator, [prompts[i] for i in indices], [prompt_ids[i] for i in indices],
                cfg.rollout.completions_per_prompt, eos_id,
            )  # fmt: skip
            t_gen = time.time()
            rewards = reward_fn(rollout.prompts, rollout.texts, rollout.finished, reduce_sum=reduce_sum)
            rollout.scores = rewards.rewards.float()
            score_rollout(
                rollout, policy=unwrapped, reference=built.reference,
                critic=accelerator.unwrap_model(critic_w) if critic_w is not None else None,
                batch_size=cfg.rollout.forward_batch_size, pad_id=tokenizer.pad_token_id, device=device,
            )  # fmt: skip
            t_score = time.time()
            row = _reward_row(rewards, reduce_sum, accelerator.num_processes)
            beta = kl_ctl.value
            if not _rewards_finite(rollout, reduce_sum, state, cfg, step, say):
                row["skipped"] = 1.0
            else:
                row.update(compute_advantages(
                    rollout, cfg, beta, state, reduce_sum=reduce_sum, gather=gather_all,
                    rank=accelerator.process_index,
                ))  # fmt: skip
                warmup = cfg.uses_critic and step <= cfg.critic.warmup_steps
                row.update(ppo_update(accelerator, models, rollout, cfg, beta, state, warmup=warmup,
                                      ptx_batches=ptx_batches, say=say))  # fmt: skip
                if warmup:
                    row["critic_warmup"] = 1.0
                kl_ctl.update(row["kl"], len(rollout) * accelerator.num_processes)
            t_end = time.time()
            row.update(_rollout_row(rollout, reduce_sum))
            row.update(
                beta=beta, time_generate=t_gen - t0, time_score=t_score - t_gen, time_update=t_end - t_score,
                step_seconds=t_end - t0, tokens_per_second=row["response_tokens"] / max(t_gen - t0, 1e-9),
            )  # fmt: skip
            _kl_guard(cfg, row, step, say)
            history.append({"step": step, **row})
            if step % cfg.logging.log_every == 0 or step == cfg.steps:
                logger.log(step, {f"ppo/{k}": v for k, v in row.items()})
            if cfg.samples_every and (step % cfg.samples_every == 0 or step == 1) and main:
                _log_samples(logger, run_dir, step, rollout, rewards, cfg.samples_count)
            bar.update(1)
            bar.set_postfix(reward=f"{row['reward/normalized']:.3f}", kl=f"{row.get('kl', float('nan')):.3f}")
            if cfg.save_every and step % cfg.save_every == 0 and step < cfg.steps:
                save(accelerator, run_dir, step, cfg, unwrapped, critic_w, models, kl_ctl, state, reward_fn,
                     history, tokenizer, say)  # fmt: skip
    bar.close()
    return _finish(
        cfg,
        accelerator,
        unwrapped,
        critic_w,
        tokenizer,
        run_dir,
        history,
        start_step,
        trainable,
        started,
        say,
    )


def _rewards_finite(rollout, reduce_sum, state, cfg: PpoConfig, step: int, say) -> bool:
    """False (and the step's update skipped, counted, maybe the run stopped) when any process has a
    NaN or infinite reward."""
    from rlhf.ppo.update import NonFiniteError, nonfinite_message

    bad = reduce_sum((~torch.isfinite(rollout.scores)).sum().double().reshape(1))
    if float(bad[0]) == 0:
        return True
    state.skipped += 1
    say(f"[guard] warning: step {step}: a reward is NaN or infinite; update skipped ({state.skipped} so far)")
    if state.skipped > cfg.guards.max_nonfinite:
        raise NonFiniteError(nonfinite_message(state.skipped, cfg))
    return False


def _reward_row(rewards, reduce_sum, processes: int) -> dict[str, float]:
    """The reward metrics of this process's rollout, averaged over processes (equal rollout sizes)."""
    local = rewards.metrics()
    keys = sorted(local)
    totals = reduce_sum(torch.tensor([float(local[k]) for k in keys], dtype=torch.float64))
    return {k: v / processes for k, v in zip(keys, totals.tolist())}


def _rollout_row(rollout, reduce_sum) -> dict[str, float]:
    from rlhf.losses.ppo import explained_variance

    lengths = torch.tensor([float(len(r)) for r in rollout.response], dtype=torch.float64)
    sums = reduce_sum(torch.stack([lengths.sum(), torch.tensor(float(len(lengths)), dtype=torch.float64)]))
    row = {"response_length": float(sums[0] / sums[1]), "response_tokens": float(sums[0])}
    if rollout.returns is not None and rollout.values is not None:
        row["explained_variance"] = float(explained_variance(rollout.values, rollout.returns, rollout.mask))
    return row


def _kl_guard(cfg: PpoConfig, row: dict, step: int, say) -> None:
    kl = row.get("kl")
    if kl is None:
        return
    limit = (
        cfg.guards.kl_warn_factor * cfg.kl.target
        if cfg.kl.controller == "adaptive"
        else cfg.guards.kl_warn_above
    )
    if not math.isfinite(kl) or kl > limit:
        row["kl_flagged"] = 1.0
        say(
            f"[guard] warning: step {step}: KL to the reference is {kl:.3f} nats per completion, over {limit:g}; "
            "the policy may be drifting into text the reward model does not know (reward hacking): "
            "raise kl.coef, lower optimizer.lr, or use kl.controller adaptive"
        )


def _trim_samples(path: Path, step: int) -> None:
    """Drop sample rows of steps after `step` (a fresh run: all; a resumed one: those after its checkpoint)."""
    if not path.is_file():
        return
    kept = [
        line for line in path.read_text(encoding="utf-8").splitlines() if json.loads(line)["step"] <= step
    ]
    path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


def _log_samples(logger, run_dir: Path, step: int, rollout, rewards, count: int) -> None:
    from rlhf.data.jsonl import prompt_to_json

    rows = []
    for i in range(min(count, len(rollout))):
        rows.append({
            "step": step, "prompt": prompt_to_json(rollout.prompts[i]), "completion": rollout.texts[i],
            "reward": float(rewards.rewards[i]), "raw_reward": float(rewards.raw[i]),
            "finished": rollout.finished[i],
            **{f"reward/{k}": v[i] for k, v in {**rewards.per_source, **rewards.extras}.items()},
        })  # fmt: skip
    with (run_dir / "samples.jsonl").open("a", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    table = "| reward | prompt | completion |\n|---|---|---|\n" + "\n".join(
        f"| {r['reward']:.3f} | {str(r['prompt'])[:200]!r} | {r['completion'][:400]!r} |" for r in rows
    )
    logger.log_text(step, "ppo/samples", table)


def _finish(
    cfg, accelerator, policy, critic_w, tokenizer, run_dir, history, start_step, trainable, started, say
):
    from rlhf.ppo.setup import save_outputs

    accelerator.wait_for_everyone()
    rewards = [row["reward/normalized"] for row in history]
    summary: dict[str, Any] = {
        "steps": len(history) and history[-1]["step"],
        "resumed_from_step": start_step,
        "estimator": cfg.advantage.estimator,
        "reward": rewards,
        "raw_reward": [row.get("reward/raw") for row in history],
        "kl": [row.get("kl") for row in history],
        "beta": [row.get("beta") for row in history],
        "policy_loss": [row.get("policy_loss") for row in history],
        "value_loss": [row.get("value_loss") for row in history],
        "step_seconds": [row["step_seconds"] for row in history],
        "generation_seconds": [row["time_generate"] for row in history],
        "skipped_updates": sum(1 for row in history if row.get("skipped")),
        "kl_flagged_steps": [row["step"] for row in history if row.get("kl_flagged")],
        "trainable_parameters": trainable,
    }
    critic = accelerator.unwrap_model(critic_w) if critic_w is not None else None
    if accelerator.is_main_process:
        summary.update(save_outputs(cfg, policy, critic, tokenizer, run_dir))
        summary["seconds"] = round(time.time() - started, 1)
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        if rewards:
            say(
                f"[done] {summary['steps']} steps, reward {rewards[0]:.4f} -> {rewards[-1]:.4f}, "
                f"KL {summary['kl'][-1] if summary['kl'][-1] is not None else float('nan'):.4f}; "
                f"policy in {summary['policy_dir']}"
            )
    accelerator.wait_for_everyone()
    return PpoResult(summary, policy, tokenizer)
