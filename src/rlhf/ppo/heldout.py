"""PPO's held-out evaluation, and keeping the checkpoint it scores best (`select: best_heldout`).

Every `heldout.every` steps and at the last one, the policy answers the held-out prompts (greedy by
default, with the built-in engine) and the reward sources score the answers. `heldout.score`, the
name of a source — usually a weight-0 monitor that is not the reward model, such as the pipeline's
`gold` or an LLM judge — is the independent score, logged as `ppo/heldout/<score>` beside
`ppo/heldout/reward` (the optimized reward). Each process answers its share of the prompts; the
means are over all of them.

With `select: best_heldout` the trainable weights at the best independent score are kept (each
process copies its own part to CPU memory) and become the saved policy; the run says which step
it kept and what the last step scored. A reward model that the policy learned to exploit rises to
the end while the independent score turns down: the kept policy is the one before the turn.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from rlhf.ppo.config import PpoConfig


class HeldoutEval:
    """`evaluate(step) -> metrics row`; `keep(step, row)`; `restore()` at the end of the run."""

    def __init__(self, run: Any, load_prompt_ids) -> None:
        cfg: PpoConfig = run.cfg
        h = cfg.heldout
        assert h.path is not None
        if cfg.select == "best_heldout" and any(share < 0.999 for share in run.sharding.get("held", [])):
            from rlhf.config.core import ConfigError

            raise ConfigError(
                "`select: best_heldout` keeps a copy of the weights: not under FSDP or ZeRO-3 sharding"
            )
        names = [source.name for source in run.reward_fn.sources]
        if h.score not in names:
            from rlhf.config.core import ConfigError

            raise ConfigError(
                f"`heldout.score: {h.score}` names no reward source; the sources are {', '.join(names)} (add the "
                f"independent one with weight 0, e.g. reward.sources=[..., {{function: gold.py:score, weight: 0, name: {h.score}}}])"
            )
        data = dataclasses.replace(cfg.data, path=h.path, limit=h.limit)
        prompts, ids, summary, _ = load_prompt_ids(dataclasses.replace(cfg, data=data), run.tokenizer)
        rank, world = run.accelerator.process_index, run.accelerator.num_processes
        self.prompts, self.ids = prompts[rank::world], ids[rank::world]
        self.total = len(prompts)
        self.run = run
        self.key = f"heldout/{h.score}"
        self.best: tuple[int, float] | None = None
        self.kept: dict[str, torch.Tensor] | None = None
        self.last: tuple[int, float] | None = None
        run.say(f"[heldout] {summary}; scored by `{h.score}` every {h.every} steps")

    def due(self, step: int) -> bool:
        cfg = self.run.cfg
        return step % cfg.heldout.every == 0 or step == cfg.max_steps

    @torch.no_grad()
    def evaluate(self, step: int) -> dict[str, float]:
        """The held-out means of the independent score and of the reward at this step."""
        from rlhf.generation.sampling import sample_sequences
        from rlhf.training.sharding import root_gathered

        run, h = self.run, self.run.cfg.heldout
        sampling = dataclasses.replace(run.cfg.rollout.sampling, temperature=h.temperature, seed=run.cfg.seed)
        lm = run.policy.lm
        was_training = lm.training
        lm.eval()
        try:
            with root_gathered(run.models.policy):
                samples = sample_sequences(
                    lm, run.tokenizer, self.ids, sampling, progress=False, desc="held out"
                )
        finally:
            lm.train(was_training)
        texts = [s.text for s in samples]
        finished = [s.finish != "length" for s in samples]
        out = run.reward_fn(self.prompts, texts, finished, reduce_sum=run.reduce_sum) if texts else None
        score = out.per_source.get(h.score, []) if out is not None else []
        reward = out.raw.double().tolist() if out is not None else []
        sums = run.reduce_sum(torch.tensor([sum(score), sum(reward), float(len(score))], dtype=torch.float64))
        n = max(1.0, float(sums[2]))
        row = {self.key: float(sums[0]) / n, "heldout/reward": float(sums[1]) / n}
        self.last = (step, row[self.key])
        return row

    def keep(self, step: int, row: dict[str, float]) -> None:
        """With `select: best_heldout`, copy the trainable weights when this step scores best so far."""
        value = row[self.key]
        if self.best is not None and value <= self.best[1]:
            return
        self.best = (step, value)
        if self.run.cfg.select == "best_heldout":
            named = self.run.models.policy.named_parameters()
            self.kept = {name: p.detach().to("cpu", copy=True) for name, p in named if p.requires_grad}

    def restore(self) -> dict[str, Any]:
        """Load the kept weights (with `best_heldout`) and say which step the policy is from."""
        cfg = self.run.cfg
        info: dict[str, Any] = {"rule": cfg.select, "score": cfg.heldout.score, "prompts": self.total}
        if self.last is not None:
            info.update(last_step=self.last[0], last_value=self.last[1])
        if self.best is not None:
            info.update(best_step=self.best[0], best_value=self.best[1])
        if cfg.select != "best_heldout" or self.kept is None or self.best is None:
            info["kept_step"] = self.last[0] if self.last else None
            return info
        with torch.no_grad():
            for name, p in self.run.models.policy.named_parameters():
                if name in self.kept:
                    p.copy_(self.kept[name].to(p.device))
        info["kept_step"] = self.best[0]
        last = f"the last step ({self.last[0]}) scored {self.last[1]:.4f}" if self.last else ""
        self.run.say(
            f"[heldout] kept the policy of step {self.best[0]}, the best held-out {cfg.heldout.score} "
            f"({self.best[1]:.4f} on {self.total} prompts); {last}"
        )
        return info
