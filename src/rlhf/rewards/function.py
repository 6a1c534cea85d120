"""r(x, y): reward sources weighted, normalized and shaped into the total a trainer uses.

    reward_fn = build_reward_function(cfg.reward, device=accelerator.device)
    out = reward_fn(prompts, completions, finished, reduce_sum=lambda t: accelerator.reduce(t.to(dev), "sum"))
    out.rewards          # (N,) float32: sum of weight * normalized source rewards, shaped
    out.metrics()        # {"reward/raw": ..., "reward/normalized": ..., ...}

The sources themselves (reward models, functions, endpoints) are in `rlhf.rewards.sources`. Each source is normalized on its own (`none`,
`saved` statistics of a reward model, or `running` statistics of this run, synchronised across
processes), then the weighted sum is shaped: `no_eos_penalty` for completions that never ended,
then clipping to [-clip, clip].

Non-finite rewards are passed through (the trainer's guards decide what to do with them); they are
left out of running statistics, so one NaN does not poison every later step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rlhf.config.core import ConfigError
from rlhf.data.records import Prompt
from rlhf.rewards.config import RewardSourceConfig, RewardSourcesConfig
from rlhf.rewards.sources import (
    RESERVED_NAMES,
    STD_FLOOR,
    ClassifierSource,
    FunctionSource,
    HttpSource,
    RewardModelSource,
    RewardSource,
    RewardSourceError,
    SourceOutput,
)

ReduceSum = Callable[[torch.Tensor], torch.Tensor]
"""All-reduce (sum) of a small tensor across processes; returns the elementwise sum."""


# ----------------------------------------------------------------------------- running moments


class RunningMoments:
    """Running mean and (population) standard deviation of every value seen, on all processes.

    Each update merges the batch's count, mean and sum of squared deviations into the running
    ones with Chan et al.'s parallel formula. With `reduce_sum` the batch statistics are summed
    over processes first (two small all-reduces: count and sum, then squared deviations from the
    global batch mean), so every process holds what one process seeing all values would. Every
    process must call `update` the same number of times. Non-finite values are left out.
    """

    def __init__(self) -> None:
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0
        """Sum of squared deviations from `mean`."""

    @property
    def std(self) -> float:
        """sqrt(m2 / count); 1.0 before any value is seen."""
        return math.sqrt(self.m2 / self.count) if self.count else 1.0

    def update(self, values: torch.Tensor, reduce_sum: ReduceSum | None = None) -> None:
        values = values.detach().reshape(-1).to("cpu", torch.float64)
        values = values[torch.isfinite(values)]

        def total(t: torch.Tensor) -> torch.Tensor:
            return t if reduce_sum is None else reduce_sum(t).to("cpu", torch.float64)

        count, value_sum = total(torch.stack([values.new_tensor(len(values)), values.sum()])).tolist()
        if count == 0:
            return  # no process saw a finite value (every process returns here alike)
        batch_mean = value_sum / count
        batch_m2 = total(((values - batch_mean) ** 2).sum().reshape(1)).item()
        merged = self.count + count
        delta = batch_mean - self.mean
        self.mean += delta * count / merged
        self.m2 += batch_m2 + delta**2 * self.count * count / merged
        self.count = int(round(merged))

    def state_dict(self) -> dict[str, float]:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.count, self.mean, self.m2 = int(state["count"]), float(state["mean"]), float(state["m2"])


# ----------------------------------------------------------------------------- the reward function


@dataclass
class RewardOutput:
    """Rewards of N completions: what training uses, and what is logged."""

    rewards: torch.Tensor
    """(N,) float32: sum of weight * normalized source rewards, minus `no_eos_penalty`, clipped."""
    raw: torch.Tensor
    """(N,) float32: sum of weight * raw source rewards (no normalization or shaping)."""
    per_source: dict[str, list[float]]
    """Raw rewards of each source, by source name (N each)."""
    extras: dict[str, list[float]]
    """Extra per-completion numbers returned by sources (N each); named `<source>/<key>` when the
    key alone would clash with another source's key, a source name or a metric."""
    no_eos: torch.Tensor
    """(N,) bool: completions that did not end (the penalty applied, if configured)."""
    clipped: torch.Tensor | None = None
    """(N,) bool: totals that were beyond [-clip, clip]; None when clipping is off."""

    def metrics(self) -> dict[str, float]:
        """Means over the completions for logging (non-finite values left out of each mean)."""
        row = {
            "reward/raw": _finite_mean(self.raw),
            "reward/normalized": _finite_mean(self.rewards),
            "reward/nonfinite_fraction": _mean((~torch.isfinite(self.rewards)).float()),
        }
        named = {**(self.per_source if len(self.per_source) > 1 else {}), **self.extras}
        for name, values in named.items():
            row[f"reward/{name}"] = _finite_mean(torch.tensor(values, dtype=torch.float64))
        row["reward/no_eos_fraction"] = _mean(self.no_eos.float())
        if self.clipped is not None:
            row["reward/clipped_fraction"] = _mean(self.clipped.float())
        return row


def _mean(values: torch.Tensor) -> float:
    return values.double().mean().item() if values.numel() else float("nan")


def _finite_mean(values: torch.Tensor) -> float:
    return _mean(values[torch.isfinite(values)])


@dataclass
class WeightedSource:
    """One source as the reward function uses it."""

    name: str
    source: RewardSource
    weight: float
    normalize: str
    """Resolved: `none`, `saved` or `running`."""
    moments: RunningMoments | None = None
    """`running` only."""

    def normalized(self, raw: torch.Tensor, reduce_sum: ReduceSum | None) -> torch.Tensor:
        if self.normalize == "saved":
            assert self.source.stats is not None
            mean, std = self.source.stats
        elif self.normalize == "running":
            assert self.moments is not None
            self.moments.update(raw, reduce_sum)  # this batch counts in its own normalization
            mean, std = self.moments.mean, self.moments.std
        else:
            return raw
        return (raw - mean) / max(std, STD_FLOOR)


class RewardFunction:
    """Sources, their weights and normalization, and the shaping; see the module docstring."""

    def __init__(
        self, sources: list[WeightedSource], *, clip: float | None = None, no_eos_penalty: float | None = None
    ) -> None:
        if not sources:
            raise ConfigError("a reward function needs at least one source")
        self.sources = sources
        self.clip = clip
        self.no_eos_penalty = no_eos_penalty

    @property
    def reward_model_dirs(self) -> list[str]:
        """Directories of the reward-model sources, in order (e.g. to start a critic from)."""
        return [s.source.path for s in self.sources if isinstance(s.source, RewardModelSource)]

    def __call__(
        self,
        prompts: Sequence[Prompt],
        completions: Sequence[str],
        finished: Sequence[bool] | torch.Tensor,
        *,
        reduce_sum: ReduceSum | None = None,
    ) -> RewardOutput:
        """Rewards of `completions` (answers to `prompts`, same order); `finished[i]` is False for a
        completion that hit the token limit without ending. With running normalization every process
        must call this at the same steps, with its `reduce_sum`."""
        n = len(completions)
        if len(prompts) != n or len(finished) != n:
            raise ValueError(f"{len(prompts)} prompts, {n} completions and {len(finished)} finished flags")
        no_eos = ~torch.as_tensor(finished, dtype=torch.bool).cpu().reshape(n)
        total = torch.zeros(n, dtype=torch.float64)  # (N,)
        raw_total = torch.zeros(n, dtype=torch.float64)  # (N,)
        per_source: dict[str, list[float]] = {}
        extras: dict[str, dict[str, list[float]]] = {}
        for s in self.sources:
            out = s.source(prompts, completions) if n else SourceOutput([])
            raw = torch.tensor(out.rewards, dtype=torch.float64).reshape(n)
            total += s.weight * s.normalized(raw, reduce_sum)
            raw_total += s.weight * raw
            per_source[s.name] = out.rewards
            extras[s.name] = out.extras
        if self.no_eos_penalty:
            total -= self.no_eos_penalty * no_eos.double()
        clipped = None
        if self.clip is not None:
            clipped = total.abs() > self.clip
            total = total.clamp(-self.clip, self.clip)  # NaN stays NaN
        return RewardOutput(
            rewards=total.float(), raw=raw_total.float(), per_source=per_source,
            extras=self._name_extras(extras), no_eos=no_eos, clipped=clipped,
        )  # fmt: skip

    def _name_extras(self, extras: dict[str, dict[str, list[float]]]) -> dict[str, list[float]]:
        taken = set(RESERVED_NAMES) | {s.name for s in self.sources}
        seen: dict[str, int] = {}
        for keys in extras.values():
            for key in keys:
                seen[key] = seen.get(key, 0) + 1
        named = {}
        for source, keys in extras.items():
            for key, values in keys.items():
                unique = seen[key] == 1 and key not in taken
                named[key if unique else f"{source}/{key}"] = values
        return named

    def state_dict(self) -> dict[str, Any]:
        """Running statistics of every `running` source (for checkpoints)."""
        return {"moments": {s.name: s.moments.state_dict() for s in self.sources if s.moments is not None}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state.get("moments", {})
        running = {s.name: s.moments for s in self.sources if s.moments is not None}
        if set(saved) != set(running):
            raise RewardSourceError(
                f"the checkpoint has running reward statistics for {sorted(saved) or 'no source'}, "
                f"this config normalizes {sorted(running) or 'no source'} with running statistics"
            )
        for name, moments in running.items():
            moments.load_state_dict(saved[name])


# ----------------------------------------------------------------------------- building


def source_names(sources: list[RewardSourceConfig]) -> list[str]:
    """`name` if set; else `rm` (model), the function's name, or `http` (url), with an index
    (from 1) when several sources would share a name."""
    explicit = [s.name for s in sources if s.name]
    for name in explicit:
        if name in RESERVED_NAMES:
            raise ConfigError(f"reward source name `{name}` is reserved for a metric; choose another `name`")
    if len(set(explicit)) != len(explicit):
        raise ConfigError(f"reward source names must differ, got {explicit}")
    bases = [None if s.name else _default_name(s) for s in sources]
    taken = set(explicit)
    names: list[str] = []
    for source, base in zip(sources, bases):
        if source.name:
            names.append(source.name)
            continue
        assert base is not None  # every unnamed source has a default name
        name, index = base, 1
        if bases.count(base) > 1 or base in taken or base in RESERVED_NAMES:
            while f"{base}{index}" in taken:
                index += 1
            name = f"{base}{index}"
        taken.add(name)
        names.append(name)
    return names


def _default_name(source: RewardSourceConfig) -> str:
    if source.model:
        return "rm"
    if source.function:
        return source.function.rpartition(":")[2].split(".")[-1] or "function"
    return "judge" if source.judge else "http"


def build_source(
    cfg: RewardSourceConfig, *, device: str | torch.device | None = None, dtype: str = "auto"
) -> Any:
    """The source `cfg` describes (loads the reward model or classifier, imports the function)."""
    if cfg.model and reads_as_classifier(cfg):
        return ClassifierSource(
            cfg.model, label=cfg.label, output=cfg.output, input=cfg.input, batch_size=cfg.batch_size,
            device=device, dtype=dtype,
        )  # fmt: skip
    if cfg.model:
        return RewardModelSource(cfg.model, batch_size=cfg.batch_size, device=device, dtype=dtype)
    if cfg.function:
        return FunctionSource(cfg.function)
    if cfg.judge:
        from rlhf.rewards.judge import JudgeSource

        return JudgeSource(cfg.judge, mode=cfg.judge_mode)
    assert cfg.url
    return HttpSource(cfg.url, batch_size=cfg.batch_size, timeout_s=cfg.timeout_s, retries=cfg.retries)


def reads_as_classifier(cfg: RewardSourceConfig) -> bool:
    """Whether `cfg.model` is read through its own classifier head (`ClassifierSource`) rather than
    as a reward model of `rlhf reward`'s kind: when the config asks for a label, an output or an
    input, or the checkpoint is not one `rlhf reward` wrote and has several labels or is an
    encoder (its own text-pair reading, not a causal reward model's prompt layout)."""
    from rlhf.config.parts import BUILTIN_TINY
    from rlhf.models.kind import kind_of_config
    from rlhf.models.load import adapter_base_path, read_config
    from rlhf.models.scalar import SCALAR_FILE

    if cfg.reads_classifier:
        return True
    assert cfg.model is not None
    if cfg.model == BUILTIN_TINY or (Path(cfg.model).expanduser() / SCALAR_FILE).is_file():
        return False
    if adapter_base_path(cfg.model) != cfg.model:
        return False
    config = read_config(cfg.model)
    return getattr(config, "num_labels", 1) > 1 or kind_of_config(config) == "encoder"


def build_reward_function(
    cfg: RewardSourcesConfig, *, device: str | torch.device | None = None
) -> RewardFunction:
    """The reward function of `cfg`: every source loaded, its normalization resolved.

    `device` (for reward models) is used unless `cfg.device` says otherwise.
    """
    configs = cfg.all_sources()
    if not configs:
        raise ConfigError("no reward given: set reward.model, reward.function, reward.url or reward.sources")
    names = source_names(configs)
    for name, source_cfg in zip(names, configs):
        if source_cfg.normalize == "saved" and not source_cfg.model:
            raise ConfigError(
                f"reward source `{name}`: `normalize: saved` needs a reward model's saved statistics; "
                "use `running` or `none`"
            )
    sources = []
    for name, source_cfg in zip(names, configs):
        source = build_source(source_cfg, device=cfg.device or device, dtype=cfg.dtype)
        mode = source_cfg.normalize
        if mode == "auto":
            mode = "saved" if source.stats is not None else "none"
        if mode == "saved" and source.stats is None:
            raise ConfigError(
                f"reward source `{name}`: `normalize: saved` but {source_cfg.model} has no saved reward "
                "statistics (reward_mean/reward_std in rlhf_scalar.json); use `running` or `none`"
            )
        moments = RunningMoments() if mode == "running" else None
        sources.append(WeightedSource(name, source, source_cfg.weight, mode, moments))
    return RewardFunction(sources, clip=cfg.clip, no_eos_penalty=cfg.no_eos_penalty)


class RawScorer:
    """Reward sources as a plain scorer, `scorer(prompts, completions).rewards`: the weighted sum of
    the sources' raw rewards, neither normalized nor shaped. What ranks completions (best-of-N,
    rrhf) and scores them for evaluation: a reward model's own scores, as it gives them."""

    def __init__(self, cfg: RewardSourcesConfig, *, device: str | torch.device | None = None) -> None:
        self.function = build_reward_function(cfg, device=device)
        self.label = cfg.describe()
        """The sources (paths, functions, URLs), for messages and summaries."""

    def __call__(self, prompts: Sequence[Prompt], completions: Sequence[str]) -> SourceOutput:
        out = self.function(prompts, completions, [True] * len(completions))
        return SourceOutput(out.raw.tolist(), out.extras)
