"""Rewards: reward models, Python functions and HTTP endpoints (`sources`), weighted, normalized and
shaped into r(x, y) (`function`), configured by `config`. Used by ppo, generate --best-of, eval,
rrhf and the pipeline."""

from rlhf.rewards.config import RewardSourceConfig, RewardSourcesConfig
from rlhf.rewards.function import RewardFunction, RewardOutput, RunningMoments, build_reward_function
from rlhf.rewards.sources import (
    FunctionSource,
    HttpSource,
    RewardModelSource,
    RewardSourceError,
    SourceOutput,
    load_function,
)

__all__ = [
    "FunctionSource",
    "HttpSource",
    "RewardFunction",
    "RewardModelSource",
    "RewardOutput",
    "RewardSourceConfig",
    "RewardSourceError",
    "RewardSourcesConfig",
    "RunningMoments",
    "SourceOutput",
    "build_reward_function",
    "load_function",
]
