"""Reward models: training on comparisons, rankings, ratings and labels, and evaluating their scores
(`rlhf.reward.metrics`). The losses themselves live in `rlhf.losses.reward`."""
