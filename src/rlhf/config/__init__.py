"""Typed configuration: shared parts and the loader (YAML + `--set` overrides)."""

from rlhf.config.core import (
    ConfigError,
    field_docs,
    from_dict,
    load_config,
    parse_overrides,
    render_config,
    to_dict,
)
from rlhf.config.parts import (
    BUILTIN_TINY,
    DataConfig,
    FreezeConfig,
    LoggingConfig,
    ModelConfig,
    OptimizerConfig,
    PeftConfig,
    PromptConfig,
)

__all__ = [
    "BUILTIN_TINY",
    "ConfigError",
    "DataConfig",
    "FreezeConfig",
    "LoggingConfig",
    "ModelConfig",
    "OptimizerConfig",
    "PeftConfig",
    "PromptConfig",
    "field_docs",
    "from_dict",
    "load_config",
    "parse_overrides",
    "render_config",
    "to_dict",
]
