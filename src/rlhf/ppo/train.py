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

from rlhf.files import write_json_atomic
from rlhf.ppo.config import PpoConfig
from rlhf.ppo.experience import Experience
from rlhf.ppo.rollout import Rollout
from rlhf.ppo.run_state import PpoRun, UpdateState
from rlhf.training.guards import NonFiniteGuard
from rlhf.training.overoptimization import turn, turn_line


@dataclass
class PpoResult:
    """What `run_ppo` hands back."""

    summary: dict[str, Any]
    """What the run measured (also in `<output_dir>/summary.json`)."""
    policy: torch.nn.Module
    """The trained `PolicyValue` (LoRA merged into its LM unless QLoRA)."""
    tokenizer: Any
    """The policy's tokenizer."""


def load_prompt_ids(cfg: PpoConfig, tokenizer) -> tuple[list, list[list[int]], str, dict[str, Any]]:
    """(prompts as in the data, their rendered token ids, a summary line, the load report)."""
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
    line = summary + (f" ({cut} at the limit)" if cut else "")
    return [r.prompt for r in records], ids, line, loaded.report.as_dict()


def ptx_stream(cfg: PpoConfig, tokenizer, accelerator, start: int, decoder_start: int | None = None):
    """Endless PPO-ptx batches (input_ids, attention_mask, labels, count = the global target tokens);
    with `decoder_start` (an encoder-decoder policy) the prompts for its encoder and the answers for
    its decoder (`collate_seq2seq`)."""
    from rlhf.data import PromptRenderer, load_records
    from rlhf.data.examples import collate, encode_demonstrations, to_rows
    from rlhf.models.seq2seq import collate_seq2seq
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
        len(rows),
        cfg.loss.ptx_batch_size,
        num_processes=accelerator.num_processes,
        process_index=accelerator.process_index,
        seed=cfg.seed,
        start=start,
    )
    for indices in stream:
        chosen = [rows[i] for i in indices]
        batch = (
            collate(chosen, tokenizer.pad_token_id, packed=False)
            if decoder_start is None
            else collate_seq2seq(chosen, tokenizer.pad_token_id, decoder_start)
        )
        count = sum(rows[i].num_targets for i in indices)
        total = accelerator.reduce(torch.tensor(count, device=accelerator.device), reduction="sum")
        yield {**{k: v.to(accelerator.device) for k, v in batch.items()}, "count": int(total)}


def run_ppo(
    cfg: PpoConfig, *, resume: str | bool | None = None, overwrite: bool = False, generator=None
) -> PpoResult:
    """Train the policy with PPO (or a critic-free estimator); returns the summary and the policy.

    `resume`: True continues from the newest checkpoint of `output_dir`, a path from that
    checkpoint. `generator`: a replacement generation engine (see `rlhf.ppo.rollout.Generator`).
    """
    from rlhf.models.seq2seq import is_seq2seq, start_token
    from rlhf.ppo.checkpoint import restore, save
    from rlhf.tracking import MetricsLogger
    from rlhf.tracking.progress import progress_block
    from rlhf.training.batches import BatchStream
    from rlhf.training.loop import notify

    engine_notes: list[str] = []
    engine = _check_config(cfg, engine_notes.append)
    started = time.time()
    run, prompts, prompt_ids, trainable = _start(cfg, engine, resume=resume, overwrite=overwrite)
    accelerator, main = run.accelerator, run.accelerator.is_main_process
    for note in engine_notes:
        run.say(note)
    start_step = restore(run, resume)
    if main:
        _trim_samples(run.run_dir / "samples.jsonl", start_step)
    if start_step == 0:
        # Sampling differs per process (their prompts differ anyway); the weights were made above.
        torch.manual_seed(cfg.seed + 1 + accelerator.process_index)
    stream = BatchStream(
        len(prompts),
        cfg.rollout.prompts_per_step,
        num_processes=accelerator.num_processes,
        process_index=accelerator.process_index,
        seed=cfg.seed,
        start=start_step,
    )
    start = start_token(run.policy.lm) if is_seq2seq(run.policy.lm) else None
    ptx = (
        ptx_stream(cfg, run.tokenizer, accelerator, run.state.ptx_position, start)
        if cfg.loss.ptx_coef > 0
        else None
    )
    generator = generator or _generator(run, engine)
    heldout = None
    if cfg.heldout.path:
        from rlhf.ppo.heldout import HeldoutEval

        heldout = HeldoutEval(run, load_prompt_ids)
    logger = MetricsLogger(run.run_dir, tensorboard=cfg.logging.tensorboard, enabled=main)
    with logger, progress_block(cfg.max_steps, "ppo", enabled=cfg.logging.progress and main) as bar:
        bar.update(start_step)
        notify("started")
        for step in range(start_step + 1, cfg.max_steps + 1):
            indices = next(iter(stream))
            row, samples = _step(run, generator, [prompts[i] for i in indices], [prompt_ids[i] for i in indices],
                                 step, ptx)  # fmt: skip
            if heldout is not None and heldout.due(step):
                row.update(heldout.evaluate(step))
                heldout.keep(step, row)
            run.history.append({"step": step, **row})
            if step % cfg.logging.log_every == 0 or step == cfg.max_steps:
                logger.log(step, {f"ppo/{k}": v for k, v in row.items()})
            if cfg.samples_every and (step % cfg.samples_every == 0 or step == 1) and main:
                _log_samples(logger, run.run_dir, step, *samples, cfg.samples_count)
            bar.update(1)
            bar.set_postfix(reward=f"{row['reward/normalized']:.3f}", kl=f"{row.get('kl', float('nan')):.3f}")
            if cfg.save_every and step % cfg.save_every == 0 and step < cfg.max_steps:
                save(run, step)
            notify("stepped", step, row, [])
        notify("ended")
    selected = heldout.restore() if heldout is not None else None
    result = _finish(run, start_step, trainable, started, selected)
    if hasattr(generator, "close"):  # after the run's last collective: vLLM's shutdown touches process groups
        generator.close()
    return result


def _generator(run: PpoRun, engine: str):
    """The rollout engine: one per process, seeded per process, writing under the run directory."""
    from rlhf.engines import make_generator

    cfg, rank = run.cfg, run.accelerator.process_index
    run.say(f"[engine] rollouts sampled by {engine}")
    return make_generator(
        engine,
        run.tokenizer,
        dataclasses.replace(cfg.rollout.sampling, seed=None),
        cfg.rollout.vllm,
        workdir=run.run_dir / "engine" / f"process-{rank}",
        seed=cfg.seed + rank,
    )


def _check_config(cfg: PpoConfig, say) -> str:
    """Checks that need more than the config alone, before any model loads; returns the rollout
    engine (`hf` or `vllm`)."""
    from rlhf.config.core import ConfigError
    from rlhf.engines import resolve_engine

    if not cfg.reward.all_sources():
        raise ConfigError(
            "rlhf ppo needs a reward: set reward.model, reward.function, reward.url or reward.sources"
        )
    # Checked here, not when the config loads: `rlhf pipeline` fills `reward.model` in itself.
    if cfg.critic.init_from_reward and not cfg.reward.model:
        raise ConfigError("`critic.init_from_reward` needs `reward.model`")
    return resolve_engine(cfg.rollout.engine, cfg.model, cfg.peft.method, say=say)


def _start(
    cfg: PpoConfig, engine: str, *, resume: str | bool | None, overwrite: bool
) -> tuple[PpoRun, list, list[list[int]], int]:
    """The run's accelerator, data, reward and models: (the run, prompts, their token ids, the
    number of trainable policy parameters). `engine`: the rollout engine (`hf` or `vllm`);
    `resume`, `overwrite`: see `start_stage`."""
    from rlhf.losses.ppo import MovingBaseline, make_kl_controller
    from rlhf.models import load_tokenizer, trainable_parameter_summary
    from rlhf.ppo.setup import build_models, check_sharded, prepare_models
    from rlhf.rewards.function import build_reward_function
    from rlhf.training.loop import start_stage
    from rlhf.training.sharding import is_deepspeed, sharding_report

    # Accumulation 1: the update accumulates a minibatch's micro-batches itself.
    accumulation_off = dataclasses.replace(cfg.optimizer, gradient_accumulation_steps=1)
    accelerator, say, run_dir = start_stage(
        "ppo", cfg, accumulation_off, mixed_precision=cfg.mixed_precision, resume=resume, overwrite=overwrite
    )
    check_sharded(cfg, accelerator, engine)
    device = accelerator.device
    tokenizer = load_tokenizer(cfg.model, padding_side="left")
    prompts, prompt_ids, data_summary, data_report = load_prompt_ids(cfg, tokenizer)
    say(f"[data] {data_summary}")
    reward_fn = build_reward_function(cfg.reward, device=cfg.reward.device or device)
    sources = ", ".join(f"{s.name} (weight {s.weight:g}, normalize {s.normalize})" for s in reward_fn.sources)
    say(f"[reward] {sources}")
    built = build_models(cfg, tokenizer, device)
    trainable, total = trainable_parameter_summary(built.policy)
    say(f"[model] {cfg.model.path}: {total:,} parameters, {trainable:,} trainable (peft: {cfg.peft.method})")
    for note in built.notes:
        say(f"[model] {note}")
    models = prepare_models(cfg, accelerator, built, tokenizer.pad_token_id)
    sharding, line = sharding_report(accelerator, models.policy, models.policy_optimizer)
    say(line)
    if is_deepspeed(accelerator) and models.value_scheduler is not None:
        say(
            "[model] one DeepSpeed engine: the value head's parameters are groups of the policy's optimizer "
            "(at critic.lr), and their gradients are clipped together with the policy's"
        )
    run = PpoRun(
        cfg=cfg,
        accelerator=accelerator,
        run_dir=run_dir,
        models=models,
        policy=accelerator.unwrap_model(models.policy),
        reference=built.reference,
        kl_ctl=make_kl_controller(cfg.kl.controller, cfg.kl.coef, cfg.kl.target, cfg.kl.horizon),
        state=UpdateState(
            MovingBaseline(cfg.advantage.baseline_decay),
            NonFiniteGuard(cfg.max_nonfinite, cfg.optimizer.lr, "updates"),
        ),
        reward_fn=reward_fn,
        tokenizer=tokenizer,
        say=say,
        sharding=sharding,
        data_report=data_report,
    )
    return run, prompts, prompt_ids, trainable


def _step(
    run: PpoRun, generator, prompts: list, prompt_ids: list[list[int]], step: int, ptx
) -> tuple[dict[str, float], tuple[Rollout, Any]]:
    """One PPO step: sample, reward, experience, update. Returns (the step's metrics row, what the
    samples table logs: (rollout, rewards))."""
    from rlhf.ppo.experience import engine_mismatch_row, make_experience
    from rlhf.ppo.rollout import sample_rollout
    from rlhf.ppo.update import ppo_update
    from rlhf.training.sharding import root_gathered

    cfg = run.cfg
    t0 = time.time()
    generator.sync(run.policy.lm)
    tokenizer = run.tokenizer
    eos_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.pad_token_id
    with root_gathered(run.models.policy):  # FSDP2: generate calls the LM inside the sharded root
        rollout = sample_rollout(generator, prompts, prompt_ids, cfg.rollout.samples_per_prompt, eos_id)
    t_gen = time.time()
    rewards = run.reward_fn(rollout.prompts, rollout.texts, rollout.finished, reduce_sum=run.reduce_sum)
    scores = rewards.rewards.float()  # (R,)
    row = _reward_row(rewards, run.reduce_sum, run.accelerator.num_processes)
    beta = run.kl_ctl.value
    exp = None
    if not _rewards_finite(run, scores, step):
        row["skipped"] = 1.0
        t_score = time.time()
    else:
        exp, row["kl"] = make_experience(run, rollout, scores, beta)
        row.update(engine_mismatch_row(run, exp))
        t_score = time.time()
        warmup = cfg.uses_critic and step <= cfg.critic.warmup_steps
        row.update(ppo_update(run, exp, beta, warmup=warmup, ptx_batches=ptx))
        if warmup:
            row["critic_warmup"] = 1.0
        run.kl_ctl.update(row["kl"], len(exp) * run.accelerator.num_processes)
    t_end = time.time()
    row.update(_rollout_row(rollout.response, exp, run.reduce_sum))
    row.update(
        beta=beta,
        time_generate=t_gen - t0,
        time_score=t_score - t_gen,
        time_update=t_end - t_score,
        step_seconds=t_end - t0,
        tokens_per_second=row["response_tokens"] / max(t_gen - t0, 1e-9),
    )
    _kl_guard(cfg, row, step, run.say)
    return row, (rollout, rewards)


def _rewards_finite(run: PpoRun, scores: torch.Tensor, step: int) -> bool:
    """False (and the step's update skipped, counted, maybe the run stopped) when any process has a
    NaN or infinite reward."""
    bad = run.reduce_sum((~torch.isfinite(scores)).sum().double().reshape(1))
    if float(bad[0]) == 0:
        return True
    run.state.guard.skip(f"step {step}: a reward is NaN or infinite", run.say)
    return False


def _reward_row(rewards, reduce_sum, processes: int) -> dict[str, float]:
    """The reward metrics of this process's rollout, averaged over processes (equal rollout sizes)."""
    local = rewards.metrics()
    keys = sorted(local)
    totals = reduce_sum(torch.tensor([float(local[k]) for k in keys], dtype=torch.float64))
    return {k: v / processes for k, v in zip(keys, totals.tolist())}


def _rollout_row(response: list[list[int]], exp: Experience | None, reduce_sum) -> dict[str, float]:
    from rlhf.losses.ppo import explained_variance

    lengths = torch.tensor([float(len(r)) for r in response], dtype=torch.float64)
    sums = reduce_sum(torch.stack([lengths.sum(), torch.tensor(float(len(lengths)), dtype=torch.float64)]))
    row = {"response_length": float(sums[0] / sums[1]), "response_tokens": float(sums[0])}
    if exp is not None and exp.returns is not None and exp.values is not None:
        row["explained_variance"] = float(explained_variance(exp.values, exp.returns, exp.mask))
    return row


def kl_guard_limit(cfg: PpoConfig) -> float:
    """The KL (nats per completion) over which the guard flags a step."""
    if cfg.kl.controller == "adaptive":
        return cfg.guards.kl_warn_factor * cfg.kl.target
    return cfg.guards.kl_warn_above


def _kl_guard(cfg: PpoConfig, row: dict, step: int, say) -> None:
    kl = row.get("kl")
    if kl is None:
        return
    limit = kl_guard_limit(cfg)
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


def _log_samples(logger, run_dir: Path, step: int, rollout: Rollout, rewards, count: int) -> None:
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


def _turns(cfg: PpoConfig, history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each monitor (a weight-0 reward source, e.g. gold) logged every step: whether it peaked
    and fell while the optimized reward rose (`rlhf.training.overoptimization.turn`)."""
    from rlhf.rewards.function import source_names

    sources = cfg.reward.all_sources()
    out = []
    for name, source in zip(source_names(sources), sources):
        rows = [r for r in history if r.get(f"reward/{name}") is not None and r.get("reward/raw") is not None]
        if source.weight != 0 or len(rows) != len(history):
            continue
        entry = turn(
            [r["step"] for r in rows],
            [r["reward/raw"] for r in rows],
            [r[f"reward/{name}"] for r in rows],
            name,
        )
        if entry is not None:
            out.append(entry)
    return out


def _finish(
    run: PpoRun, start_step: int, trainable: int, started: float, selected: dict[str, Any] | None = None
) -> PpoResult:
    from rlhf.ppo.setup import gathered_policy, save_outputs
    from rlhf.training.sharding import memory_line, peak_memory_per_process, whole_on_each_process

    cfg, history, accelerator = run.cfg, run.history, run.accelerator
    accelerator.wait_for_everyone()
    policy = gathered_policy(run)  # whole on the main process (None elsewhere under sharding)
    peaks = peak_memory_per_process(accelerator)
    run.say(memory_line(accelerator, peaks))
    rewards = [row["reward/normalized"] for row in history]
    summary: dict[str, Any] = {
        "steps": len(history) and history[-1]["step"],
        "resumed_from_step": start_step,
        "resumed": start_step > 0,
        "estimator": cfg.advantage.estimator,
        "reward": rewards,
        "raw_reward": [row.get("reward/raw") for row in history],
        "kl": [row.get("kl") for row in history],
        "beta": [row.get("beta") for row in history],
        "policy_loss": [row.get("policy_loss") for row in history],
        "value_loss": [row.get("value_loss") for row in history],
        "step_seconds": [row["step_seconds"] for row in history],
        "generation_seconds": [row["time_generate"] for row in history],
        "train_seconds": round(sum(row["step_seconds"] for row in history), 3),  # the whole run's steps
        "skipped_updates": sum(1 for row in history if row.get("skipped")),
        "kl_flagged_steps": [row["step"] for row in history if row.get("kl_flagged")],
        "kl_guard_limit": kl_guard_limit(cfg),
        "trainable_parameters": trainable,
        "sharding": run.sharding,
        "data_report": run.data_report,
        "peak_memory_gib": [round(p, 3) for p in peaks],
        "overoptimization": _turns(cfg, history),
        "selected": selected,
    }
    if accelerator.is_main_process:
        assert policy is not None
        with whole_on_each_process():  # the shared critic's classifier is built on this process alone
            summary.update(save_outputs(cfg, policy, run.critic, run.tokenizer, run.run_dir))
        summary["seconds"] = round(time.time() - started, 1)
        write_json_atomic(run.run_dir / "summary.json", summary)
        if rewards:
            last_kl = summary["kl"][-1] if summary["kl"][-1] is not None else float("nan")
            resumed = f" (resumed at step {start_step}; the lists cover the whole run)" if start_step else ""
            run.say(
                f"[done] {summary['steps']} steps, reward {rewards[0]:.4f} -> {rewards[-1]:.4f}, "
                f"KL {last_kl:.4f}; policy in {summary['policy_dir']}{resumed}"
            )
        for entry in summary["overoptimization"]:
            line = turn_line(entry)
            if line:
                run.say(f"[ppo] {line}")
    accelerator.wait_for_everyone()
    return PpoResult(summary, policy if policy is not None else run.policy, run.tokenizer)
