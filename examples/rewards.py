"""Rule-based rewards for `rlhf ppo` examples and tests: `reward.function: examples/rewards.py:NAME`.

A reward function takes the prompts (text, or a list of {role, content} messages for chat data)
and the completions (text), and returns one number per completion, or a dict with `rewards` and
further per-completion lists that are logged next to the reward (e.g. a gold score).
"""

from __future__ import annotations


def letter_e(prompts, completions):
    """Share of characters that are the letter `e`, times 10: a dense signal any model can climb
    (a stand-in for a learned reward; watch the KL grow as the policy games it)."""
    rewards = [10.0 * sum(ch == "e" for ch in text) / max(1, len(text)) for text in completions]
    return {"rewards": rewards, "length": [float(len(text)) for text in completions]}


def target_length(prompts, completions, target: int = 40):
    """Minus the distance (in characters, scaled) between the completion's length and `target`."""
    return [-abs(len(text) - target) / target for text in completions]
