"""Settings of the generation engines (`engine: hf | vllm | auto` and the `vllm:` section of every
config that samples: `rlhf ppo`'s `rollout`, `rlhf generate`, `rlhf eval policy`, the pipeline)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rlhf.config.core import ConfigError

EngineName = Literal["hf", "vllm", "auto"]
"""`hf`: transformers' `generate` on the model itself. `vllm`: a vLLM engine in the same process,
loaded with the model's weights and synced after every update (an error before any model loads
when vLLM is missing or cannot run the model). `auto`: vLLM when it is installed and supports the
model, else `hf` (the log says which and why)."""


@dataclass
class VllmConfig:
    """How the in-process vLLM engine is set up (used only with `engine: vllm` or `auto`)."""

    gpu_memory_utilization: float = 0.3
    """GPU: the share of the GPU's memory the engine may take for its weights and KV cache. The
    trainer shares the GPU, so leave it what it needs (the default 0.3 leaves 70%)."""
    sleep: bool = True
    """GPU: release the engine's memory while the trainer works and take it back for each rollout
    (vLLM's sleep mode: the KV cache is dropped, and the weights too when they are reloaded anyway).
    Ignored on a CPU, where vLLM has no sleep mode."""
    kv_cache_gib: int = 1
    """CPU: whole GiB of memory for the KV cache (vLLM's `VLLM_CPU_KVCACHE_SPACE`). A sequence of
    T tokens takes 2 x layers x kv_heads x head_dim x T x 4 bytes (float32)."""
    lora_sync: Literal["merged", "adapter"] = "merged"
    """How a LoRA policy reaches the engine after each update: `merged` sends W + BA as plain
    weights (the engine runs no adapter kernels); `adapter` saves the adapter and serves it with
    vLLM's LoRA support (the base weights stay put). `bench/rollout_engines.py` times both."""
    max_model_len: int | None = None
    """Longest prompt + completion the engine accepts; default: the model's context length (a
    smaller value saves KV-cache memory)."""
    enforce_eager: bool | None = None
    """Run the model eagerly (no CUDA graphs or compilation); default: true on a CPU, false on a
    GPU. Graphs make decoding faster on a GPU for a slower start."""

    def __post_init__(self) -> None:
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ConfigError(
                f"`vllm.gpu_memory_utilization` must be in (0, 1], got {self.gpu_memory_utilization}"
            )
        if self.kv_cache_gib < 1:
            raise ConfigError(f"`vllm.kv_cache_gib` must be at least 1 (whole GiB), got {self.kv_cache_gib}")
        if self.max_model_len is not None and self.max_model_len < 2:
            raise ConfigError(f"`vllm.max_model_len` must be at least 2, got {self.max_model_len}")
