"""Best-of-N sampling (rejection sampling): draw N completions of each prompt, score them with a
reward, keep the one scored highest.

    scorer = RewardModelSource("runs/reward/model", device="cuda")   # or any scorer, see `Scorer`
    picks = best_of_n(model, tokenizer, prompt_ids, prompts, sampling, 4, scorer)
    picks[0].text, picks[0].reward, picks[0].rewards   # prompt 0: the kept text, its reward, all 4

`rlhf generate --best-of N` writes the picks as SFT data (rejection-sampling fine-tuning is SFT on
them), and `rlhf eval policy` with `best_of` evaluates the best-of-N policy.

The N draws of a prompt are independent samples of the policy (no re-draw of repeats:
best-of-N is defined on i.i.d. draws). Ties go to the earliest draw; a non-finite reward never
wins over a finite one.

KL. The best-of-N policy's KL from the policy it samples from cannot be read off the token
log-probs of the kept sample (its probability under best-of-N depends on the other draws).
`analytic_kl(n)` = log N − (N−1)/N (Stiennon et al. 2020, appendix; Hilton's derivation) is exact
when the N draws are distinct, and an upper bound in general (Beirami et al. 2024).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from rlhf.data.records import Prompt
from rlhf.generation.config import SamplingConfig
from rlhf.generation.sampling import Sample, generate_samples


class Scorer(Protocol):
    """What scores completions: `rlhf.rewards.RewardModelSource`, `FunctionSource`, ..."""

    def __call__(self, prompts: Sequence[Prompt], completions: Sequence[str]) -> Any:
        """An object whose `rewards` holds one number per completion, in order."""
        ...


@dataclass
class BestOfN:
    """The kept completion of one prompt, and every draw it was picked from."""

    text: str
    """The kept completion (the text of `samples[index]`)."""
    token_ids: list[int]
    """Its generated token ids (as `Sample.token_ids`)."""
    reward: float
    """Its reward: the highest of `rewards` (see the module docstring for ties and NaN)."""
    rewards: list[float]
    """(N,) the reward of every draw, in draw order."""
    samples: list[Sample]
    """(N,) every draw, in draw order."""
    index: int
    """Position of the kept draw in `samples` and `rewards`."""

    @property
    def candidates(self) -> list[str]:
        """(N,) the text of every draw, in draw order."""
        return [sample.text for sample in self.samples]


def best_of_n(
    model: Any,
    tokenizer: Any,
    prompt_ids: list[list[int]],
    prompts: Sequence[Prompt],
    sampling: SamplingConfig,
    n: int,
    scorer: Scorer,
    *,
    skip_blank: bool = False,
    progress: bool = True,
) -> list[BestOfN]:
    """The best of `n` samples of every prompt, in prompt order.

    `prompt_ids` are the rendered, encoded prompts the model continues; `prompts` the same prompts
    as the scorer reads them (text or messages, not rendered: a reward model applies its own
    layout). `n` draws are made with `sampling`, repeats kept; its seed makes the draws
    reproducible. `skip_blank`: a whitespace-only draw is kept only when every draw
    of the prompt is blank (SFT data cannot hold an empty completion).
    """
    if n < 1:
        raise ValueError(f"best-of-N needs n >= 1, got {n}")
    if len(prompts) != len(prompt_ids):
        raise ValueError(f"{len(prompt_ids)} encoded prompts but {len(prompts)} prompts")
    groups = generate_samples(model, tokenizer, prompt_ids, sampling, per_prompt=n, progress=progress)
    flat_prompts = [prompt for prompt in prompts for _ in range(n)]
    flat_texts = [sample.text for group in groups for sample in group]
    rewards = [float(value) for value in scorer(flat_prompts, flat_texts).rewards]
    if len(rewards) != len(flat_texts):
        raise ValueError(f"the scorer returned {len(rewards)} rewards for {len(flat_texts)} completions")
    picks = []
    for index, group in enumerate(groups):
        group_rewards = rewards[index * n : (index + 1) * n]
        best = best_index(group_rewards, [s.text for s in group] if skip_blank else None)
        kept = group[best]
        picks.append(BestOfN(kept.text, kept.token_ids, group_rewards[best], group_rewards, group, best))
    return picks


def best_index(rewards: Sequence[float], texts: Sequence[str] | None = None) -> int:
    """Position of the highest reward: the earliest on ties; a non-finite reward only when all are.

    With `texts`, whitespace-only texts are passed over unless all of them are blank.
    """
    if not rewards:
        raise ValueError("no rewards to pick from")
    allowed = list(range(len(rewards)))
    if texts is not None:
        allowed = [i for i in allowed if texts[i].strip()] or allowed
    finite = [i for i in allowed if math.isfinite(rewards[i])] or allowed
    return max(finite, key=lambda i: (rewards[i] if math.isfinite(rewards[i]) else 0.0, -i))


def analytic_kl(n: int) -> float:
    """KL(best-of-n ‖ policy) = log n − (n − 1) / n nats per answer (see the module docstring)."""
    if n < 1:
        raise ValueError(f"best-of-N needs n >= 1, got {n}")
    return math.log(n) - (n - 1) / n
