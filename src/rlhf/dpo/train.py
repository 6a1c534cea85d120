"""`rlhf dpo`: optimize the policy straight from preference pairs, in the order the run happens.

load preferences (rankings expand to every pair of a prompt, as in the reward stage) -> policy
(+ LoRA / QLoRA) -> reference log-probs of every completion, computed once and cached (or a
reference that runs on every micro-batch) -> resume? -> train (every completion of a micro-batch in
one forward pass; pairs index the sequence log-probs) -> held-out implicit-reward accuracy -> save.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from rlhf.config.core import ConfigError
from rlhf.dpo.config import DpoConfig
from rlhf.losses.preference import PairLogps, dpo_losses, implicit_reward_metrics
from rlhf.preference.data import PreferenceDataSpec, build_preference_data
from rlhf.preference.groups import Group, Layout, layout_groups
from rlhf.preference.sequences import (
    SequenceBatch,
    SequenceLogps,
    collate_sequences,
    completion_lengths,
    sequence_layout,
    sequence_logps_of,
)


def build_data(cfg: DpoConfig, tokenizer):
    """Training and held-out groups of the preferences (the reward stage's reader and pairs), the
    counts, a one-line summary and the load report."""
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
    return data.train, data.held_out, data.counts, data.summary, data.report


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


class Reference:
    """The reference's sequence log-probs: the policy with its adapter switched off (LoRA), the
    untouched policy itself (full fine-tuning, a fresh run whose log-probs are cached before the
    first step), or a frozen copy loaded from `reference` (or `model.path`)."""

    def __init__(
        self, cfg: DpoConfig, inner: SequenceLogps, accelerator, tokenizer, *, fresh: bool, cache: bool
    ):
        from rlhf.models import load_lm
        from rlhf.training.sharding import whole_on_each_process

        self.inner, self.accelerator = inner, accelerator
        self.adapter = cfg.peft.method != "none"
        self.copy: SequenceLogps | None = None
        if not self.adapter and (cfg.reference or not fresh or not cache):
            ref_cfg = cfg.model if not cfg.reference else _with_path(cfg.model, cfg.reference)
            with whole_on_each_process():  # frozen, outside the engine: whole on each process
                ref_lm = load_lm(ref_cfg, for_training=False, tokenizer=tokenizer)
            self.copy = SequenceLogps(ref_lm).to(accelerator.device)
        self.where = (
            "the adapter switched off" if self.adapter
            else f"a frozen copy of {cfg.reference or cfg.model.path}" if self.copy is not None
            else "the starting policy itself, before its first step"
        )  # fmt: skip

    def __call__(self, batch: SequenceBatch) -> torch.Tensor:
        """(N,) sequence log-probs, under the policy's autocast (so at step 0 policy and reference agree)."""
        from rlhf.models.adapters import adapters_disabled

        with torch.no_grad(), self.accelerator.autocast():
            if self.copy is not None:
                return self.copy(**batch.inputs()).logps
            if self.adapter:
                with adapters_disabled(self.inner.lm):
                    return self.inner(**batch.inputs()).logps
            return self.inner(**batch.inputs()).logps  # the policy before its first step (cache only)

    def release(self) -> None:
        """Free a frozen copy once its log-probs are cached."""
        self.copy = None


def run_dpo(cfg: DpoConfig, *, resume: str | bool | None = None, overwrite: bool = False) -> DpoResult:
    """Train the policy on preferences with DPO / conservative DPO / IPO; returns what the run
    measured (also in `summary.json`) and the policy, saved to `<output_dir>/policy`."""
    from rlhf.models import load_lm, load_tokenizer
    from rlhf.models.readout import disable_dropout
    from rlhf.training import build_optimizer, build_scheduler
    from rlhf.training.loop import items_per_step
    from rlhf.training.stage import Stage

    stage = Stage.start("dpo", cfg, resume=resume, overwrite=overwrite)
    accelerator, say = stage.accelerator, stage.say
    tokenizer = load_tokenizer(cfg.model, padding_side="right")
    train, held_out, counts, data_summary, stage.data_report = build_data(cfg, tokenizer)
    say(f"[data] {data_summary}")

    lm = load_lm(cfg.model, cfg.peft, for_training=True, tokenizer=tokenizer)
    disable_dropout(lm)  # the reference runs without dropout; the policy must be the same function
    trainable = stage.report_model(lm)

    steps = stage.plan(len(train))
    cache = cfg.reference_logps == "cache" or (
        cfg.reference_logps == "auto" and steps * items_per_step(cfg, accelerator.num_processes) >= len(train)
    )
    policy = SequenceLogps(lm)
    optimizer = build_optimizer(policy, cfg.optimizer)
    scheduler = build_scheduler(optimizer, cfg.optimizer, steps)
    policy, optimizer = stage.prepare(
        policy, optimizer, scheduler, tokenizer=tokenizer, resume=resume,
        checkpointed=lambda prepared: accelerator.unwrap_model(prepared).lm,
    )  # fmt: skip
    inner = accelerator.unwrap_model(policy)
    pad_id, device = tokenizer.pad_token_id, accelerator.device
    pack_width, start = sequence_layout(stage, policy, train[: cfg.batch_size], pad_id, device)

    reference = Reference(cfg, inner, accelerator, tokenizer, fresh=stage.start_step == 0, cache=cache)
    mode = "cached once before training" if cache else "computed on every micro-batch"
    say(f"[reference] {cfg.reference or cfg.model.path}: {reference.where}; log-probs {mode}")
    ref_started = time.time()

    def logps_of(fn, groups):
        return sequence_logps_of(accelerator, fn, groups, cfg.eval.batch_size, pad_id, pack_width, start)

    train_ref = logps_of(reference, train) if cache else None
    eval_ref = logps_of(reference, held_out)
    reference_seconds = time.time() - ref_started
    if cache:
        reference.release()  # the cache is all the run needs from a frozen copy

    def policy_logps(batch: SequenceBatch) -> torch.Tensor:
        with torch.no_grad(), accelerator.autocast():
            return inner(**batch.inputs()).logps

    def run_eval(step: int) -> None:
        result = preference_metrics(cfg, held_out, logps_of(policy_logps, held_out), eval_ref)
        stage.record_eval(step, result, ("loss", "accuracy", "margin", "chosen", "rejected"))

    stream = stage.stream(len(train))

    def batches():
        for indices in stream:
            batch = collate_sequences(
                [train[i] for i in indices], pad_id, pack_width=pack_width, decoder_start=start
            )
            if train_ref is not None:
                batch.reference = torch.tensor(
                    [v for i in indices for v in train_ref[i]], dtype=torch.float32
                )
            stage.seen += len(batch.layout.need_pairs())
            yield batch.to(device)

    result, train_seconds = stage.train(
        model=policy, optimizer=optimizer, scheduler=scheduler, batches=batches(),
        loss_fn=lambda m, batch, num_items: dpo_loss(cfg, m, batch, num_items, reference),
        count_fn=lambda batch: batch.count, run_eval=run_eval if held_out else None,
    )  # fmt: skip
    summary = _summary(cfg, stage, result.steps, cache, reference_seconds, pack_width, counts,
                       stage.totals()["items"], train_seconds, trainable)  # fmt: skip
    rebuild = lambda: load_lm(cfg.model, cfg.peft, for_training=True, tokenizer=tokenizer)  # noqa: E731
    lm = stage.finish_policy(summary, policy, tokenizer, rebuild, rate="pairs_per_second", unit="pairs/s")
    return DpoResult(summary, lm, tokenizer)


def dpo_loss(cfg: DpoConfig, m, batch: SequenceBatch, num_items: int, reference) -> tuple[torch.Tensor, dict]:
    """The micro-batch's share of the step's loss (a weighted mean over its prompts, scaled back to
    its share of the step, as in the reward stage) and its implicit-reward metrics."""
    logps = m(**batch.inputs()).logps
    ref = batch.reference if batch.reference is not None else reference(batch)
    losses, pair_logps, weights = pair_terms(cfg, logps, ref, batch.lengths, batch.layout)
    loss = (losses * weights).sum() / weights.sum() * batch.layout.weight_sum / num_items
    metrics = implicit_reward_metrics(pair_logps, cfg.beta, weights)
    return loss, {k: float(v) for k, v in metrics.items()}


def _summary(cfg: DpoConfig, stage, steps: int, cache: bool, reference_seconds: float, pack_width, counts,
             pairs_seen: int, train_seconds: float, trainable: int) -> dict[str, Any]:  # fmt: skip
    history, evals = stage.history, stage.evals
    return {
        "steps": steps,
        "resumed_from_step": stage.start_step,
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


def _with_path(model_cfg, path: str):
    import dataclasses

    return dataclasses.replace(model_cfg, path=path, tokenizer=None)
