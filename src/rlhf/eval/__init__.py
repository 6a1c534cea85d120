"""Evaluating policies (`rlhf eval policy`): win rate, KL from a reference, reward and gold scores.

metrics.py   the math, plain Python (no torch): win rate with ties as half and its interval,
             sequence KL from per-token log-probabilities, means with standard errors, lengths
compare.py   several methods' evaluations side by side (per-prompt win rates between every pair),
             plain Python over their evaluation files
policy.py    `rlhf eval policy` itself (sampling, KL read-out, scoring)
"""
