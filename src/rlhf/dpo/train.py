"""`rlhf dpo`: optimize the policy straight from preference pairs, in the order the run happens.

load preferences (rankings expand to every pair of a prompt, as in the reward stage) -> policy
(+ LoRA / QLoRA) -> reference log-probs of every completion, computed once and cached (or a
reference that runs on every micro-batch) -> resume? -> train (every completion of a micro-batch in
one forward pass; pairs index the sequence log-probs) -> held-out implicit-reward accuracy -> save.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import torch

from rlhf.config.core import ConfigError, to_dict
from rlhf.dpo.config import DpoConfig
from rlhf.losses.preference import PairLogps, dpo_losses, implicit_reward_metrics
from rlhf.preference.data import PreferenceDataSpec, build_preference_data
from rlhf.preference.groups import Group, Layout, layout_groups
from rlhf.preference.sequences import (
    SequenceBatch,
    SequenceLogps,
    collate_sequences,
    completion_lengths,
    packing_isolates,
    sequence_logps_of,
)


def build_data(cfg: DpoConfig, tokenizer):
    """Training and held-out groups of the preferences (the reward stage's reader and pairs), the
    counts and a one-line summary."""
    spec = PreferenceDataSpec(
        cfg.data, cfg.prompt, cfg.seed, eval_path=cfg.eval.path, eval_fraction=cfg.eval.fraction
    )
    data = build_preference_data(spec, tokenizer)
    if data.loss != "pairwise":
        raise ConfigError(
            f"dpo learns from comparisons or rankings; {cfg.data.path} holds data for the `{data.loss}` loss "
            "(ratings or labels): turn it into comparisons, or train a reward model and use PPO"
        )
    # The reader already refuses a ranking whose completions are all tied: every group has a pair.
    return data.train, data.held_out, data.counts, data.summary


def pair_terms(cfg: DpoConfig, policy: torch.Tensor, reference: torch.Tensor, lengths, layout: Layout):
    """(per-pair losses, PairLogps, pair weights) from the (N,) sequence log-probs of groups laid
    out as `layout`, with (N,) completion `lengths`."""
    if cfg.loss_type == "ipo":  # IPO compares per-token mean log-probs
        lengths = lengths.clamp(min=1)
        policy, reference = policy / lengths, reference / lengths
    pairs = layout.need_pairs().to(policy.device)
    logps = PairLogps(
        policy[pairs.better], policy[pairs.worse], reference[pairs.better], reference[pairs.worse]
    )
    return dpo_losses(logps, cfg.beta, cfg.loss_type, cfg.label_smoothing), logps, pairs.weight


def preference_metrics(cfg: DpoConfig, groups: list[Group], policy: list[list[float]], reference) -> dict:
    """Held-out loss, implicit-reward accuracy and margin over every pair of `groups`."""
    flat = lambda values: torch.tensor([v for g in values for v in g], dtype=torch.float32)  # noqa: E731
    lay = layout_groups(groups, "pairwise")
    losses, logps, weights = pair_terms(cfg, flat(policy), flat(reference), completion_lengths(groups), lay)
    out = {"loss": float((losses * weights).sum() / weights.sum()), "pairs": len(weights)}
    metrics = implicit_reward_metrics(logps, cfg.beta, weights)
    out.update({k.replace("rewards/", ""): float(v) for k, v in metrics.items()})
    return out


@dataclass
class DpoResult:
    summary: dict[str, Any]
    """What the run measured (also in `<output_dir>/summary.json`)."""
    model: torch.nn.Module
    """The trained policy (LoRA merged; QLoRA a PeftModel)."""
    tokenizer: Any


def run_dpo(cfg: DpoConfig, *, resume: str | bool | None = None) -> DpoResult:
    """Train the policy on preferences with DPO / conservative DPO / IPO; returns what the run
    measured (also in `summary.json`) and the policy, saved to `<output_dir>/policy`."""
    from rlhf.models import load_causal_lm, load_tokenizer, trainable_parameter_summary
    from rlhf.models.adapters import adapters_disabled
    from rlhf.models.readout import disable_dropout
    from rlhf.tracking import MetricsLogger
    from rlhf.training import build_optimizer, build_scheduler, train_loop
    from rlhf.training.batches import BatchStream
    from rlhf.training.checkpoint import resume_run, save_checkpoint
    from rlhf.training.loop import items_per_step, stage_on_step, stage_steps, start_stage

    started = time.time()
    accelerator, say, run_dir = start_stage("dpo", cfg, cfg.optimizer, mixed_precision=cfg.mixed_precision)
    main = accelerator.is_main_process

    tokenizer = load_tokenizer(cfg.model, padding_side="right")
    train, held_out, counts, data_summary = build_data(cfg, tokenizer)
    say(f"[data] {data_summary}")

    lm = load_causal_lm(cfg.model, cfg.peft, for_training=True, tokenizer=tokenizer)
    disable_dropout(lm)  # the reference runs without dropout; the policy must be the same function
    trainable, total = trainable_parameter_summary(lm)
    method = "full fine-tuning" if cfg.peft.method == "none" else f"peft: {cfg.peft.method}"
    say(f"[model] {cfg.model.path}: {total:,} parameters, {trainable:,} trainable ({method})")

    steps = stage_steps(cfg, len(train), accelerator.num_processes)
    cache = cfg.reference_logps == "cache" or (
        cfg.reference_logps == "auto" and steps * items_per_step(cfg, accelerator.num_processes) >= len(train)
    )
    policy = SequenceLogps(lm)
    optimizer = build_optimizer(policy, cfg.optimizer)
    scheduler = build_scheduler(optimizer, cfg.optimizer, steps)
    policy, optimizer = accelerator.prepare(policy, optimizer)
    inner = accelerator.unwrap_model(policy)
    resumed = resume_run(
        accelerator, run_dir, resume, model=inner.lm, optimizer=optimizer, scheduler=scheduler,
        config=to_dict(cfg), say=say,
    )  # fmt: skip
    start_step, history, evals = resumed.step, resumed.history, resumed.evals

    pad_id, device = tokenizer.pad_token_id, accelerator.device
    pack_width = cfg.data.max_length if cfg.packing else None
    if pack_width is not None and not packing_isolates(
        policy, train[: cfg.batch_size], pad_id, pack_width, device
    ):
        say("[packing] this model lets packed sequences attend to each other; padding each sequence instead")
        pack_width = None

    # The reference: the adapter switched off, the untouched policy itself (full fine-tuning, fresh
    # run, reference = the starting model), or a frozen copy loaded from `reference`.
    adapter = cfg.peft.method != "none"
    own_copy = None
    if not adapter and (cfg.reference or start_step > 0 or not cache):
        ref_cfg = cfg.model if not cfg.reference else _with_path(cfg.model, cfg.reference)
        ref_lm = load_causal_lm(ref_cfg, for_training=False, tokenizer=tokenizer)
        own_copy = SequenceLogps(ref_lm).to(device)

    def reference_logps(batch: SequenceBatch) -> torch.Tensor:
        # Under the policy's autocast, so at step 0 the policy and the reference agree exactly.
        with torch.no_grad(), accelerator.autocast():
            if own_copy is not None:
                return own_copy(**batch.inputs()).logps
            if adapter:
                with adapters_disabled(inner.lm):
                    return inner(**batch.inputs()).logps
            return inner(**batch.inputs()).logps  # the policy before its first step (cache only)

    def policy_logps(batch: SequenceBatch) -> torch.Tensor:
        with torch.no_grad(), accelerator.autocast():
            return inner(**batch.inputs()).logps

    mode = "cached once before training" if cache else "computed on every micro-batch"
    where = (
        "the adapter switched off" if adapter
        else f"a frozen copy of {cfg.reference or cfg.model.path}" if own_copy is not None
        else "the starting policy itself, before its first step"
    )  # fmt: skip
    say(f"[reference] {cfg.reference or cfg.model.path}: {where}; log-probs {mode}")
    ref_started = time.time()
    train_ref = (
        sequence_logps_of(accelerator, reference_logps, train, cfg.eval.batch_size, pad_id, pack_width)
        if cache
        else None
    )
    eval_ref = sequence_logps_of(
        accelerator, reference_logps, held_out, cfg.eval.batch_size, pad_id, pack_width
    )
    reference_seconds = time.time() - ref_started
    if cache and own_copy is not None:
        own_copy = None  # freed: the cache is all the run needs from it

    accumulation = cfg.optimizer.gradient_accumulation_steps
    stream = BatchStream(
        len(train), cfg.batch_size, num_processes=accelerator.num_processes,
        process_index=accelerator.process_index, seed=cfg.seed, start=start_step * accumulation,
    )  # fmt: skip
    seen = [0]

    def batches():
        for indices in stream:
            batch = collate_sequences([train[i] for i in indices], pad_id, pack_width=pack_width)
            if train_ref is not None:
                batch.reference = torch.tensor(
                    [v for i in indices for v in train_ref[i]], dtype=torch.float32
                )
            seen[0] += len(batch.layout.pairs)
            yield batch.to(device)

    def loss_fn(m, batch: SequenceBatch, num_items: int):
        logps = m(**batch.inputs()).logps
        reference = batch.reference if batch.reference is not None else reference_logps(batch)
        losses, pair_logps, weights = pair_terms(cfg, logps, reference, batch.lengths, batch.layout)
        # A weighted mean over the batch's prompts, back to its share of the step (as in the reward stage).
        loss = (losses * weights).sum() / weights.sum() * batch.layout.weight_sum / num_items
        metrics = implicit_reward_metrics(pair_logps, cfg.beta, weights)
        return loss, {k: float(v) for k, v in metrics.items()}

    logger = MetricsLogger(run_dir, tensorboard=cfg.logging.tensorboard, enabled=main)

    def run_eval(step: int) -> None:
        mine = sequence_logps_of(
            accelerator,
            policy_logps,
            held_out,
            cfg.eval.batch_size,
            pad_id,
            pack_width,
        )
        result = preference_metrics(cfg, held_out, mine, eval_ref)
        evals.append({"step": step, **result})
        keys = ("loss", "accuracy", "margin", "chosen", "rejected")
        logger.log(step, {f"eval/{k}": result[k] for k in keys})
        say(f"[eval] step {step}: " + ", ".join(f"{k} {result[k]:.4f}" for k in keys))
        accelerator.wait_for_everyone()

    def save(step: int) -> None:
        path = save_checkpoint(
            accelerator, run_dir, step, model=inner.lm, optimizer=optimizer, scheduler=scheduler,
            tokenizer=tokenizer, state={"history": history, "evals": evals, "config": to_dict(cfg)},
            keep=cfg.keep_checkpoints,
        )  # fmt: skip
        say(f"[checkpoint] saved {path}", flush=True)

    on_step = stage_on_step(
        steps=steps, history=history, eval_every=cfg.eval.every, run_eval=run_eval if held_out else None,
        save_every=cfg.save_every, save=save,
    )  # fmt: skip
    if held_out and start_step == 0:
        run_eval(0)
    train_started = time.time()
    with logger:
        result = train_loop(
            accelerator=accelerator, model=policy, optimizer=optimizer, scheduler=scheduler,
            batches=batches(), loss_fn=loss_fn, max_steps=steps, optim_cfg=cfg.optimizer, logger=logger,
            log_every=cfg.logging.log_every, progress=cfg.logging.progress, desc="train",
            start_step=start_step, count_fn=lambda batch: batch.count, on_step=on_step,
        )  # fmt: skip
        train_seconds = time.time() - train_started
        if held_out:
            run_eval(result.steps)
    pairs_seen = int(accelerator.reduce(torch.tensor(seen[0], device=device), reduction="sum").item())

    summary: dict[str, Any] = {
        "steps": result.steps,
        "resumed_from_step": start_step,
        "loss_type": cfg.loss_type,
        "beta": cfg.beta,
        "reference": cfg.reference or cfg.model.path,
        "reference_logps": "cache" if cache else "live",
        "reference_seconds": round(reference_seconds, 3),
        "packed": pack_width is not None,
        "data": counts,
        "train_loss": [row["loss"] for row in history],
        "train_accuracy": [row.get("rewards/accuracy") for row in history],
        "train_margin": [row.get("rewards/margin") for row in history],
        "eval": evals,
        "final_eval": evals[-1] if evals else None,
        "train_pairs": pairs_seen,
        "train_seconds": round(train_seconds, 3),
        "pairs_per_second": round(pairs_seen / train_seconds, 2) if train_seconds > 0 else None,
        "trainable_parameters": trainable,
    }
    accelerator.wait_for_everyone()
    lm = accelerator.unwrap_model(policy).lm
    if main:
        from rlhf.models import save_model

        out_dir = run_dir / "policy"
        lm = save_model(lm, tokenizer, out_dir, merge=cfg.peft.method == "lora")
        summary.update(policy_dir=str(out_dir), seconds=round(time.time() - started, 1))
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        acc = f", held-out accuracy {evals[-1]['accuracy']:.3f}" if evals else ""
        say(
            f"[done] {result.steps} steps, loss {summary['train_loss'][0]:.4f} -> {summary['train_loss'][-1]:.4f}"
            f"{acc}; {summary['pairs_per_second']} pairs/s; policy in {out_dir}"
        )
    accelerator.wait_for_everyone()
    return DpoResult(summary, lm, tokenizer)


def _with_path(model_cfg, path: str):
    import dataclasses

    return dataclasses.replace(model_cfg, path=path, tokenizer=None)
