"""Loss functions as plain tensor math: torch only, no model or framework imports, hand-checked in tests."""

from rlhf.losses.lm import token_nll
from rlhf.losses.preference import (
    PairLogps,
    best_of_groups,
    dpo_loss,
    dpo_losses,
    implicit_reward_metrics,
    rrhf_rank_loss,
)
from rlhf.losses.reward import (
    PairBatch,
    centering_penalty,
    concat_pairs,
    label_loss,
    normalize_ratings,
    pairwise_loss,
    plackett_luce_loss,
    ranking_pairs,
    rating_pairs,
    regression_loss,
)

__all__ = [
    "PairBatch",
    "PairLogps",
    "best_of_groups",
    "dpo_loss",
    "dpo_losses",
    "implicit_reward_metrics",
    "rrhf_rank_loss",
    "centering_penalty",
    "concat_pairs",
    "label_loss",
    "normalize_ratings",
    "pairwise_loss",
    "plackett_luce_loss",
    "ranking_pairs",
    "rating_pairs",
    "regression_loss",
    "token_nll",
]
