"""Offline preference losses as plain tensor math: the DPO family and RRHF (torch only).

DPO family. For a pair (chosen y_w, rejected y_l) of one prompt, with sequence log-probabilities
under the policy π and the frozen reference, the implicit reward of a completion is
r(y) = β (log π(y) - log ref(y)), and h = [log π(y_w) - log ref(y_w)] - [log π(y_l) - log ref(y_l)]:

    sigmoid (DPO, Rafailov et al. 2023)      -log σ(β h)
    conservative DPO (label smoothing ε)    -(1 - ε) log σ(β h) - ε log σ(-β h)
                                            (the label is taken to be wrong with probability ε)
    IPO (Azar et al. 2023)                  (h - 1 / (2β))²   (on per-token mean log-probs)

RRHF (Yuan et al. 2023). For the K responses of a prompt with scores s_i and length-normalized
policy log-probs p_i = (1/|y_i|) Σ_t log π(y_i,t | x, y_i,<t), the ranking loss is
Σ_{s_i < s_j} max(0, p_i - p_j), and the SFT loss is the negative log-likelihood of the best response.

Every loss takes optional per-pair (or per-group) weights: the mean becomes Σ w·loss / Σ w, so a
pair exported with weight 1/3 counts a third (as in the reward stage).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

DpoLossType = Literal["sigmoid", "ipo", "conservative"]


@dataclass
class PairLogps:
    """Sequence log-probabilities of each pair's chosen and rejected completion, shape [pairs]."""

    policy_chosen: torch.Tensor
    policy_rejected: torch.Tensor
    reference_chosen: torch.Tensor
    reference_rejected: torch.Tensor

    def log_ratio_margin(self) -> torch.Tensor:
        """h = [log π(y_w) - log ref(y_w)] - [log π(y_l) - log ref(y_l)]."""
        return (self.policy_chosen - self.reference_chosen) - (self.policy_rejected - self.reference_rejected)


def _weighted_mean(values: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    if weights is None:
        return values.mean()
    weights = weights.to(values.dtype)
    total = weights.sum()
    if not torch.isfinite(total) or total <= 0:
        raise ValueError(f"pair weights must sum to a positive number, got {total.item()}")
    return (values * weights).sum() / total


def dpo_losses(
    logps: PairLogps, beta: float, loss_type: DpoLossType = "sigmoid", label_smoothing: float = 0.0
) -> torch.Tensor:
    """Per-pair losses (shape [pairs]) of the DPO family."""
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    h = logps.log_ratio_margin()
    if loss_type == "sigmoid":
        if label_smoothing:
            raise ValueError("label_smoothing belongs to loss_type `conservative`")
        return -F.logsigmoid(beta * h)
    if loss_type == "conservative":
        if not 0.0 <= label_smoothing < 0.5:
            raise ValueError(f"conservative DPO needs 0 <= label_smoothing < 0.5, got {label_smoothing}")
        return -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    if loss_type == "ipo":
        return (h - 1.0 / (2.0 * beta)) ** 2
    raise ValueError(f"unknown DPO loss type {loss_type!r}")


def dpo_loss(
    logps: PairLogps,
    beta: float,
    loss_type: DpoLossType = "sigmoid",
    label_smoothing: float = 0.0,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """The (weighted) mean of `dpo_losses` over the pairs."""
    return _weighted_mean(dpo_losses(logps, beta, loss_type, label_smoothing), weights)


def implicit_reward_metrics(
    logps: PairLogps, beta: float, weights: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """Implicit rewards r = β (log π - log ref): chosen and rejected means, the margin, and the accuracy
    (share of pairs whose chosen reward is the higher; a tie counts ½), each a (weighted) mean."""
    with torch.no_grad():
        chosen = beta * (logps.policy_chosen - logps.reference_chosen)
        rejected = beta * (logps.policy_rejected - logps.reference_rejected)
        right = (chosen > rejected).to(chosen.dtype) + 0.5 * (chosen == rejected).to(chosen.dtype)
        return {
            "rewards/chosen": _weighted_mean(chosen, weights),
            "rewards/rejected": _weighted_mean(rejected, weights),
            "rewards/margin": _weighted_mean(chosen - rejected, weights),
            "rewards/accuracy": _weighted_mean(right, weights),
            "logps/chosen": _weighted_mean(logps.policy_chosen.detach(), weights),
            "logps/rejected": _weighted_mean(logps.policy_rejected.detach(), weights),
        }


def rrhf_rank_loss(
    norm_logps: torch.Tensor,
    scores: torch.Tensor,
    offsets: list[int],
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """RRHF's ranking loss: per group, Σ over pairs with s_i < s_j of max(0, p_i - p_j); then the
    (weighted) mean over groups. `offsets` are the groups' starts in the flat [N] tensors plus N at
    the end (group g is offsets[g]:offsets[g+1]); equal scores make no pair."""
    if norm_logps.shape != scores.shape or norm_logps.dim() != 1:
        raise ValueError("norm_logps and scores must be 1-D tensors of the same length")
    if not offsets or offsets[0] != 0 or offsets[-1] != norm_logps.numel():
        raise ValueError("offsets must start at 0 and end at the number of responses")
    per_group = []
    for start, end in zip(offsets, offsets[1:]):
        if end - start < 2:
            raise ValueError(f"a group needs at least 2 responses, got {end - start}")
        p, s = norm_logps[start:end], scores[start:end]
        worse = s[:, None] < s[None, :]  # worse[i, j]: response i scored below response j
        hinge = torch.clamp(p[:, None] - p[None, :], min=0.0)
        per_group.append((hinge * worse.to(hinge.dtype)).sum())
    return _weighted_mean(torch.stack(per_group), weights)


def best_of_groups(scores: torch.Tensor, offsets: list[int]) -> list[int]:
    """Flat index of the best-scored response of each group (the first one on a tie)."""
    return [start + int(torch.argmax(scores[start:end]).item()) for start, end in zip(offsets, offsets[1:])]
