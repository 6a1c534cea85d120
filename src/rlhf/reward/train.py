"""`rlhf reward`: train a reward model r(x, y) on human feedback, in the order the run happens.

load data -> groups (each completion tokenized once) -> scalar model (+ LoRA / QLoRA) -> resume?
-> train (every completion of a micro-batch scored in one forward pass, packed into rows without
padding; pairs index the scores)
-> held-out accuracy, margin, calibration -> score every training completion -> save with mean/std.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rlhf.data.rows import pad_right
from rlhf.losses.reward import Ties
from rlhf.preference.data import PreferenceData, PreferenceDataSpec, build_preference_data
from rlhf.preference.groups import Group, Layout, layout_groups, loss_mode
from rlhf.reward.config import RewardConfig
from rlhf.reward.data import collate_groups


def build_data(cfg: RewardConfig, tokenizer) -> PreferenceData:
    """The training and held-out groups `cfg` asks for (`rlhf.preference.data`)."""
    spec = PreferenceDataSpec(
        cfg.data, cfg.prompt, cfg.seed, eval_path=cfg.eval.path, eval_fraction=cfg.eval.fraction,
        loss=cfg.loss_type, ties=cfg.ties, margin=cfg.margin, positive_labels=cfg.positive_labels,
        negative_labels=cfg.negative_labels,
    )  # fmt: skip
    return build_preference_data(spec, tokenizer)


def batch_loss(rewards: torch.Tensor, lay: Layout, mode: str) -> tuple[torch.Tensor, dict]:
    """The mean loss over the `lay.count` weight units of a flat reward vector (N,), and metrics."""
    from rlhf.losses.reward import label_loss, pairwise_loss, plackett_luce_loss, regression_loss

    if mode == "pairwise":
        return pairwise_loss(rewards, lay.need_pairs())
    if mode == "plackett_luce":
        return plackett_luce_loss(rewards, lay.need_ranks(), offsets=lay.offsets)
    if mode == "regression":
        return regression_loss(rewards, lay.need_targets())
    return label_loss(rewards, lay.need_targets())


def score_groups(accelerator, model, groups: list[Group], batch_size: int, pad_id: int) -> list[list[float]]:
    """Every completion's reward, per group in order, on every process (each scores every N-th group)."""
    from accelerate.utils import gather_object

    from rlhf.training.sharding import even_batches

    was_training = model.training
    model.eval()
    scored = []
    with torch.no_grad():
        for chunk, keep in even_batches(accelerator, len(groups), batch_size):
            ids, mask = pad_right([seq for i in chunk for seq in groups[i].input_ids], pad_id)
            rewards = model(input_ids=ids.to(accelerator.device), attention_mask=mask.to(accelerator.device))
            if not keep:
                continue
            values, at = rewards.last.float().cpu().tolist(), 0
            for i in chunk:
                k = len(groups[i].input_ids)
                scored.append((i, values[at : at + k]))
                at += k
    model.train(was_training)
    everything = gather_object(scored) if accelerator.num_processes > 1 else scored
    return [values for _, values in sorted(everything, key=lambda pair: pair[0])]


def packing_isolates(
    model, groups: list[Group], pad_id: int, width: int, device, mode: str = "pairwise"
) -> bool:
    """Whether packed rows give every completion of `groups` the reward it gets alone (padded).

    A model whose attention ignores position-id restarts lets a packed completion see the ones
    before it; that shows as rewards off by a sizeable share of their scale (measured: 60-70% on a
    fresh head), while a model that isolates them matches to float rounding (about 1e-7; bf16
    rounding stays well under the 2% allowed here).
    """
    if not groups:
        return True
    if getattr(getattr(model, "module", model), "kind", "causal") != "causal":
        return False  # an encoder attends both ways over a whole row: packed completions would meet
    was_training = model.training
    model.eval()
    with torch.no_grad():
        padded = model(**collate_groups(groups, pad_id, mode=mode).to(device).inputs()).last.float()
        packed = collate_groups(groups, pad_id, mode=mode, pack_width=width).to(device)
        packed = model(**packed.inputs()).last.float()
    model.train(was_training)
    return bool((padded - packed).abs().max() <= 0.02 * padded.abs().max() + 1e-6)


def reward_metrics(groups: list[Group], scores: list[list[float]], mode: str, ties: Ties, bins: int) -> dict:
    """Held-out metrics of the rewards `scores` (per group) against what the groups say."""
    from rlhf.reward.metrics import (
        accuracy_by_position,
        calibration,
        mean_margin,
        pairwise_accuracy,
        reward_stats,
    )

    rewards = torch.tensor([r for group in scores for r in group], dtype=torch.float32)  # (N,)
    lay = layout_groups(groups, mode, ties)
    loss, metrics = batch_loss(rewards, lay, mode)
    out: dict[str, Any] = {"loss": loss.item(), "groups": len(groups), "completions": int(rewards.numel())}
    out.update({k: v for k, v in metrics.items() if k in ("accuracy", "mae", "top1_accuracy")})
    if lay.pairs is not None:
        table = calibration(rewards, lay.pairs, bins=bins)
        out.update(
            accuracy=pairwise_accuracy(rewards, lay.pairs), margin=mean_margin(rewards, lay.pairs),
            pairs=len(lay.pairs), ece=table["ece"], calibration=table,
        )  # fmt: skip
        if lay.ranks is not None and any(len(r) > 2 for r in lay.ranks):
            out["accuracy_by_position"] = accuracy_by_position(rewards, lay.ranks, offsets=lay.offsets)
    out["rewards"] = reward_stats(rewards, bins=bins)
    return out


@dataclass
class RewardResult:
    """What `run_reward` hands back."""

    summary: dict[str, Any]
    """What the run measured (also in `<output_dir>/summary.json`)."""
    model: torch.nn.Module
    """The trained `ScalarModel` (LoRA merged into it unless QLoRA)."""
    tokenizer: Any
    """Its tokenizer."""


def run_reward(
    cfg: RewardConfig, *, resume: str | bool | None = None, overwrite: bool = False
) -> RewardResult:
    """Train a reward model; returns what the run measured (also in `summary.json`) and the model.

    `resume`: True resumes from the newest checkpoint of `output_dir` (fresh when there is
    none), a path resumes from that checkpoint.
    """
    from rlhf.models import load_tokenizer
    from rlhf.models.scalar import load_scalar_model
    from rlhf.training import build_optimizer, build_scheduler
    from rlhf.training.stage import Stage

    stage = Stage.start("reward", cfg, resume=resume, overwrite=overwrite)
    accelerator, say = stage.accelerator, stage.say
    tokenizer = load_tokenizer(cfg.model, padding_side="right")
    data = build_data(cfg, tokenizer)
    stage.data_report = data.report
    mode = loss_mode(data.loss)
    say(f"[data] {data.summary}")

    build_model = functools.partial(
        load_scalar_model, cfg.model, cfg.peft, for_training=True, tokenizer=tokenizer
    )
    model = build_model()
    trainable = stage.report_model(model, note=f", scalar head reading {model.reads}")
    if model.note:
        say(f"[model] {model.note}")
    steps = stage.plan(len(data.train))
    optimizer = build_optimizer(model, cfg.optimizer)
    scheduler = build_scheduler(optimizer, cfg.optimizer, steps)
    # Checkpoints save and restore the transformers model inside the ScalarModel (same parameters).
    model, optimizer = stage.prepare(
        model, optimizer, scheduler, tokenizer=tokenizer, resume=resume,
        checkpointed=lambda prepared: accelerator.unwrap_model(prepared).seq_model,
    )  # fmt: skip
    stream = stage.stream(len(data.train))
    pad_id, device = tokenizer.pad_token_id, accelerator.device
    pack_width = stage.pack_width(
        lambda width: packing_isolates(model, data.train[: cfg.batch_size], pad_id, width, device, mode),
        what="completions", kind=accelerator.unwrap_model(model).kind,
    )  # fmt: skip

    def batches():
        for indices in stream:
            groups = [data.train[i] for i in indices]
            yield collate_groups(groups, pad_id, mode=mode, ties=cfg.ties, pack_width=pack_width).to(device)

    def run_eval(step: int) -> None:
        scores = score_groups(accelerator, model, data.held_out, cfg.eval.batch_size, pad_id)
        result = reward_metrics(data.held_out, scores, mode, cfg.ties, cfg.eval.bins)
        stage.record_eval(step, result, ("loss", "accuracy", "margin", "ece", "mae", "top1_accuracy"))

    result, train_seconds = stage.train(
        model=model, optimizer=optimizer, scheduler=scheduler, batches=batches(),
        loss_fn=lambda m, batch, num_items: reward_loss(cfg, mode, m, batch, num_items),
        count_fn=lambda batch: batch.count, run_eval=run_eval if data.held_out else None,
    )  # fmt: skip
    # Statistics of the trained reward over the training completions, for later normalisation.
    scores = score_groups(accelerator, model, data.train, cfg.eval.batch_size, pad_id)
    flat = torch.tensor([r for group in scores for r in group], dtype=torch.float64)
    reward_mean, reward_std = float(flat.mean()), float(flat.std(correction=0))
    summary = _summary(
        stage, result.steps, data, pack_width, reward_mean, reward_std, train_seconds, trainable
    )
    # The whole model on the main process; this process's shard elsewhere under sharding.
    whole = stage.final_model(model, accelerator.unwrap_model(model), build_model)
    unwrapped = whole if whole is not None else accelerator.unwrap_model(model)
    stage.finish(
        summary, save=lambda: _save(cfg, unwrapped, tokenizer, stage.run_dir, data, reward_mean, reward_std, flat.numel()),
        done=_done_line,
    )  # fmt: skip
    return RewardResult(summary, unwrapped, tokenizer)


def _summary(stage, steps: int, data: PreferenceData, pack_width, mean: float, std: float, seconds: float,
             trainable: int) -> dict[str, Any]:  # fmt: skip
    history, evals = stage.history, stage.evals
    return {
        "steps": steps,
        "resumed_from_step": stage.start_step,
        "loss_type": data.loss,
        "packed": pack_width is not None,
        "data": data.counts,
        "train_loss": [row["loss"] for row in history],
        "train_accuracy": [row.get("accuracy") for row in history],
        "eval": evals,
        "final_eval": evals[-1] if evals else None,
        "reward_mean": mean,
        "reward_std": std,
        "train_seconds": round(seconds, 3),
        "trainable_parameters": trainable,
    }


def reward_loss(cfg: RewardConfig, mode: str, m, batch, num_items: int) -> tuple[torch.Tensor, dict]:
    """The micro-batch's share of the step's loss and its metrics."""
    from rlhf.losses.reward import centering_penalty

    rewards = m(**batch.inputs()).last  # (N,)
    loss, metrics = batch_loss(rewards, batch.layout, mode)
    # `loss` is a weighted mean over `batch.count` units: back to a (row-weighted) sum, over the
    # step's total of units, so a row of weight w counts w rows.
    loss = loss * batch.layout.weight_sum / num_items
    if cfg.centering:
        # Per prompt over the whole step (all micro-batches and processes), like the main loss.
        lay = batch.layout
        loss = loss + centering_penalty(
            rewards, cfg.centering, offsets=lay.offsets, counted=lay.counted, denominator=num_items
        )
    keep = ("accuracy", "reward_margin", "mae", "top1_accuracy")
    return loss, {k: v for k, v in metrics.items() if k in keep and v is not None}


def _done_line(summary: dict[str, Any]) -> str:
    final = summary["final_eval"]
    acc = (
        f", held-out accuracy {final['accuracy']:.3f}" if final and final.get("accuracy") is not None else ""
    )
    losses = summary["train_loss"]
    return (
        f"[done] {summary['steps']} steps, loss {losses[0]:.4f} -> {losses[-1]:.4f}{acc}; "
        f"reward mean {summary['reward_mean']:.4f} std {summary['reward_std']:.4f}; model in {summary['model_dir']}"
    )


def _save(cfg: RewardConfig, model, tokenizer, run_dir: Path, data: PreferenceData, mean, std, n) -> dict:
    """Write the model (LoRA merged; QLoRA as an adapter: a 4-bit base cannot take the merge)."""
    from rlhf.models.scalar import save_scalar_model
    from rlhf.rewards.scorer import scorer_metadata

    merge = cfg.peft.method != "qlora"
    extra = {
        "reward_mean": mean, "reward_std": std, "num_completions": int(n), "loss": data.loss,
        "ties": cfg.ties, "margin": cfg.margin, "centering": cfg.centering, "base_model": cfg.model.path,
        "quantization": "4bit" if cfg.peft.method == "qlora" else cfg.model.quantization,
        "positive_labels": cfg.positive_labels, "negative_labels": cfg.negative_labels,
        **scorer_metadata(cfg.prompt, cfg.data.max_length, cfg.data.max_prompt_length),
    }  # fmt: skip
    out_dir = run_dir / "model"
    save_scalar_model(model, out_dir, tokenizer, extra=extra, merge=merge)
    note = {"model_dir": str(out_dir), "merged": merge or cfg.peft.method == "none"}
    if not merge:
        note["note"] = (
            "QLoRA: saved the adapter and head (merging into a 4-bit base is impossible); load it with rlhf"
        )
    return note
