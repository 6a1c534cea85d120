"""`rlhf rrhf`: rank responses to align with human feedback (RRHF, Yuan et al. 2023), in the order
the run happens.

load prompts and their responses -> policy (+ LoRA / QLoRA) -> K samples of the starting policy per
prompt (optional) -> score every response (a reward model, or people's ranks) -> responses.jsonl ->
resume? -> train -> held-out ranking accuracy -> save.

For the K responses y_i of a prompt x with scores s_i, p_i = (1/|y_i|) Σ_t log π(y_i,t | x, y_i,<t)
(every response of a micro-batch in one forward pass), and the loss is
L = rank_weight · Σ_{s_i < s_j} max(0, p_i - p_j) + sft_weight · NLL(best response), per prompt.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

import torch

from rlhf.config.core import ConfigError
from rlhf.losses.preference import best_of_groups, rrhf_rank_loss
from rlhf.preference.groups import Group, layout_groups
from rlhf.preference.sequences import (
    SequenceBatch,
    SequenceLogps,
    collate_sequences,
    completion_lengths,
    sequence_layout,
    sequence_logps_of,
)
from rlhf.rrhf.config import RrhfConfig
from rlhf.rrhf.data import (
    RESPONSES_FILE,
    add_samples,
    encode_groups,
    load_split,
    read_responses,
    score_responses,
    usable,
    write_responses,
)

METRICS = ("loss", "rank_loss", "sft_loss", "accuracy", "p_best", "p_worst")


@dataclass
class RrhfBatch:
    """A micro-batch: every response of its groups laid out once, with the groups' scores."""

    sequences: SequenceBatch
    """The responses (padded or packed) and where their tokens are."""
    scores: torch.Tensor
    """(N,) float32 the responses' scores, higher is better."""
    weights: torch.Tensor
    """(G,) float32 the groups' row weights."""

    @property
    def count(self) -> int:
        return self.sequences.count

    def to(self, device) -> RrhfBatch:
        return RrhfBatch(self.sequences.to(device), self.scores.to(device), self.weights.to(device))


def collate(
    groups: list[Group], pad_id: int, pack_width: int | None = None, decoder_start: int | None = None
) -> RrhfBatch:
    """The groups' responses laid out (`collate_sequences`), with their scores and weights."""
    sequences = collate_sequences(groups, pad_id, pack_width=pack_width, decoder_start=decoder_start)
    scores = torch.tensor([-r for g in groups for r in g.need("ranks")], dtype=torch.float32)
    return RrhfBatch(sequences, scores, torch.tensor([g.weight for g in groups], dtype=torch.float32))


def rrhf_terms(
    cfg: RrhfConfig,
    logps: torch.Tensor,
    lengths: torch.Tensor,
    scores: torch.Tensor,
    weights,
    offsets: list[int],
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(loss, metrics) of groups laid end to end, each a *sum over the groups*, from the responses'
    (N,) summed log-probs; `offsets` are the groups' starts. Divided by the number of groups they
    are means: the loss, its two terms (each group counts its row weight w_g), and per prompt
    (each counts 1) the share of its scored pairs the policy orders as the scores (a tie ½) and
    the p of its best and worst response."""
    lengths = lengths.clamp(min=1)
    p = logps / lengths if cfg.length_normalize else logps  # (N,)
    offsets = [*offsets, p.numel()]
    rank = (
        rrhf_rank_loss(p, scores, offsets, weights) * weights.sum()
    )  # Σ_g w_g Σ_{s_i<s_j} max(0, p_i - p_j)
    best = torch.tensor(best_of_groups(scores, offsets), device=p.device)  # (G,) flat indices
    worst = torch.tensor(best_of_groups(-scores, offsets), device=p.device)
    sft = (weights * -logps[best] / lengths[best]).sum()  # Σ_g w_g · mean token NLL of the best response
    loss = cfg.rank_weight * rank + cfg.sft_weight * sft
    with torch.no_grad():
        accuracy = p.new_zeros(())
        for start, end in zip(offsets, offsets[1:]):
            ps, ss = p[start:end], scores[start:end]
            scored = ss[:, None] < ss[None, :]  # scored[i, j]: response i scored below j
            right = (ps[:, None] < ps[None, :]).float() + 0.5 * (ps[:, None] == ps[None, :]).float()
            accuracy += (right * scored).sum() / scored.sum()
        metrics = {
            "rank_loss": rank.detach(), "sft_loss": sft.detach(), "accuracy": accuracy,
            "p_best": p[best].sum().detach(), "p_worst": p[worst].sum().detach(),
        }  # fmt: skip
    return loss, metrics


def rrhf_loss(cfg: RrhfConfig, module, batch: RrhfBatch, num_items: int, share: int = 1):
    """The micro-batch's part of the step's loss (its groups' sum / `num_items`, the groups of the
    step on every process) and its metrics, for `train_loop` with `count_fn`. The loop averages
    metrics over the `share` = processes x accumulation micro-batches of a step, so they are scaled
    by it: the logged values are then means over the step's groups, however they were split."""
    seq = batch.sequences
    logps = module(**seq.inputs()).logps
    loss, metrics = rrhf_terms(cfg, logps, seq.lengths, batch.scores, batch.weights, seq.layout.offsets)
    return loss / num_items, {k: float(v) * share / num_items for k, v in metrics.items()}


def held_out_metrics(cfg: RrhfConfig, groups: list[Group], logps: list[list[float]]) -> dict[str, float]:
    """The loss, its terms and the ranking metrics over every held-out group (means over the groups),
    from their summed log-probs."""
    lengths = completion_lengths(groups)
    flat = torch.tensor([v for values in logps for v in values], dtype=torch.float32)
    scores = torch.tensor([-r for g in groups for r in g.need("ranks")], dtype=torch.float32)
    weights = torch.tensor([g.weight for g in groups], dtype=torch.float32)
    offsets = layout_groups(groups, "pairwise").offsets
    loss, metrics = rrhf_terms(cfg, flat, lengths, scores, weights, offsets)
    out = {"loss": float(loss) / len(groups), **{k: float(v) / len(groups) for k, v in metrics.items()}}
    return {**out, "groups": len(groups)}


@dataclass
class RrhfResult:
    summary: dict[str, Any]
    """What the run measured (also in `<output_dir>/summary.json`)."""
    model: torch.nn.Module
    """The trained policy (LoRA merged; QLoRA a PeftModel)."""
    tokenizer: Any


def finish_responses(cfg: RrhfConfig, accelerator, say, run_dir, lm, tokenizer, train, held_out):
    """Sample and score the loaded groups, keep those with a scored pair and write them to
    `responses.jsonl`. Returns (train, held_out, counts)."""
    sample_seconds = score_seconds = 0.0
    if cfg.samples_per_prompt:
        started = time.time()
        add_samples(accelerator, train + held_out, lm, tokenizer, cfg)
        sample_seconds = time.time() - started
        say(f"[samples] {cfg.samples_per_prompt} per prompt from {cfg.model.path} in {sample_seconds:.1f} s")
    if cfg.reward.all_sources():
        started = time.time()
        score_responses(accelerator, train + held_out, cfg)
        score_seconds = time.time() - started
        count = sum(len(g.texts) for g in train + held_out)
        say(f"[score] {count} responses by {cfg.reward.describe()} in {score_seconds:.1f} s")
    train, dropped = usable(train)
    held_out, eval_dropped = usable(held_out)
    if not train:
        raise ConfigError(f"{cfg.data.path}: no prompt has two responses scored apart; nothing to learn")
    if dropped or eval_dropped:
        say(
            f"[data] {dropped + eval_dropped} prompts left out: fewer than two responses, or all scored equal"
        )
    if accelerator.is_main_process:
        scored_by = "reward" if cfg.reward.all_sources() else "people's ranks"
        write_responses(run_dir / RESPONSES_FILE, train, held_out, scored_by)
    accelerator.wait_for_everyone()
    counts = {
        "groups_left_out": dropped, "eval_groups_left_out": eval_dropped,
        "sample_seconds": round(sample_seconds, 3), "score_seconds": round(score_seconds, 3),
    }  # fmt: skip
    return train, held_out, counts


def run_rrhf(cfg: RrhfConfig, *, resume: str | bool | None = None, overwrite: bool = False) -> RrhfResult:
    """Train the policy with RRHF; returns what the run measured (also in `summary.json`) and the
    policy, saved to `<output_dir>/policy`."""
    from rlhf.models import load_lm, load_tokenizer
    from rlhf.training import build_optimizer, build_scheduler
    from rlhf.training.stage import Stage

    stage = Stage.start("rrhf", cfg, resume=resume, overwrite=overwrite)
    accelerator, say = stage.accelerator, stage.say
    tokenizer = load_tokenizer(cfg.model, padding_side="right")
    # The data first: a bad file fails before any model loads.
    responses, held_responses, reuse = _read_data(cfg, stage, resume, tokenizer)
    lm = _load_policy(cfg, tokenizer, accelerator.device)
    trainable = stage.report_model(lm)
    counts: dict[str, Any] = {}
    if not reuse:
        responses, held_responses, counts = finish_responses(
            cfg, accelerator, say, stage.run_dir, lm, tokenizer, responses, held_responses
        )
    train, stats = encode_groups(responses, tokenizer, cfg)
    held_out, _ = encode_groups(held_responses, tokenizer, cfg)
    pairs = len(layout_groups(train, "pairwise").need_pairs())
    say(
        f"[data] {len(train)} prompts, {sum(len(g.input_ids) for g in train)} responses, {pairs} scored pairs; "
        f"{stats.summary()}" + (f"; {len(held_out)} held out" if held_out else "")
    )

    steps = stage.plan(len(train))
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
    stream = stage.stream(len(train))
    share = accelerator.num_processes * cfg.optimizer.gradient_accumulation_steps

    def batches():
        for indices in stream:
            stage.seen += len(indices)
            yield collate([train[i] for i in indices], pad_id, pack_width, start).to(device)

    def run_eval(step: int) -> None:
        was_training = inner.training
        inner.eval()
        logps = sequence_logps_of(
            accelerator,
            lambda b: inner(**b.inputs()).logps,
            held_out,
            cfg.eval.batch_size,
            pad_id,
            pack_width,
            start,
        )
        inner.train(was_training)
        stage.record_eval(step, held_out_metrics(cfg, held_out, logps), METRICS)

    result, train_seconds = stage.train(
        model=policy, optimizer=optimizer, scheduler=scheduler, batches=batches(),
        loss_fn=lambda m, b, num_items: rrhf_loss(cfg, m, b, num_items, share),
        count_fn=lambda batch: batch.count, run_eval=run_eval if held_out else None,
    )  # fmt: skip
    groups_seen = stage.totals()["items"]
    data = {
        "groups": len(train), "responses": sum(len(g.input_ids) for g in train), "pairs": pairs,
        "eval_groups": len(held_out), "truncated": stats.truncated, **counts,
    }  # fmt: skip
    summary = _summary(
        cfg, stage, result.steps, reuse, pack_width, data, groups_seen, train_seconds, trainable
    )
    rebuild = lambda: load_lm(cfg.model, cfg.peft, for_training=True, tokenizer=tokenizer)  # noqa: E731
    lm = stage.finish_policy(summary, policy, tokenizer, rebuild, rate="groups_per_second", unit="prompts/s")
    return RrhfResult(summary, lm, tokenizer)


def _load_policy(cfg: RrhfConfig, tokenizer, device) -> torch.nn.Module:
    """The policy as training starts, on `device` to sample from (a quantized one is already on its
    GPU). It samples before training, so under ZeRO-3 it is built whole on each process (the engine
    partitions it when it is prepared)."""
    from rlhf.models import load_lm
    from rlhf.training.sharding import whole_on_each_process

    with whole_on_each_process() if cfg.samples_per_prompt else contextlib.nullcontext():
        lm = load_lm(cfg.model, cfg.peft, for_training=True, tokenizer=tokenizer)
    if cfg.model.quantization == "none" and cfg.peft.method != "qlora":
        lm.to(device)
    return lm


def _read_data(cfg: RrhfConfig, stage, resume, tokenizer) -> tuple[list, list, bool]:
    """(training responses, held-out responses, whether they were read back): a resumed run reads
    back the responses it trained on (the samples were drawn from the starting policy)."""
    from rlhf.data import PromptRenderer
    from rlhf.training.checkpoint import latest_checkpoint

    responses_path = stage.run_dir / RESPONSES_FILE
    resuming = bool(resume) and (resume is not True or latest_checkpoint(stage.run_dir) is not None)
    if resuming and responses_path.is_file():
        responses, held_responses = read_responses(responses_path)
        stage.say(f"[data] resuming: the responses of {responses_path}")
        return responses, held_responses, True
    responses, held_responses, text, stage.data_report = load_split(
        cfg, PromptRenderer(cfg.prompt, tokenizer)
    )
    stage.say(f"[data] {text}")
    return responses, held_responses, False


def _summary(cfg: RrhfConfig, stage, steps: int, reuse: bool, pack_width, data: dict, groups_seen: int,
             train_seconds: float, trainable: int) -> dict[str, Any]:  # fmt: skip
    history, evals = stage.history, stage.evals
    return {
        "steps": steps,
        "resumed_from_step": stage.start_step,
        "scored_by": "reward" if cfg.reward.all_sources() else "people's ranks",
        "reward": cfg.reward.describe(),
        "samples_per_prompt": cfg.samples_per_prompt,
        "responses_read_back": reuse,
        "packed": pack_width is not None,
        "data": data,
        **{f"train_{k}": [row.get(k) for row in history] for k in METRICS},
        "eval": evals,
        "final_eval": evals[-1] if evals else None,
        "train_groups": groups_seen,
        "train_seconds": round(train_seconds, 3),
        "groups_per_second": round(groups_seen / train_seconds, 2) if train_seconds > 0 else None,
        "trainable_parameters": trainable,
        "responses_file": str(stage.run_dir / RESPONSES_FILE),
    }
