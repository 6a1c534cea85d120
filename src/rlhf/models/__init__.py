"""Models: loading (hub, local, `builtin:tiny`), adapters (LoRA, QLoRA, prompt tuning), the scalar
reward/value model and saving. bitsandbytes is only imported when a quantized model is loaded."""

from rlhf.models.adapters import (
    AdapterError,
    adapters_disabled,
    apply_peft,
    find_peft_model,
    merge_adapters,
    reference_forward,
    trainable_parameter_summary,
)
from rlhf.models.load import ModelLoadError, load_lm, load_tokenizer, resolve_dtype
from rlhf.models.save import save_model
from rlhf.models.scalar import (
    SCALAR_FILE,
    ScalarModel,
    ScalarOutput,
    last_token_index,
    load_scalar_model,
    save_scalar_model,
)
from rlhf.models.tiny import build_tiny_model, build_tiny_tokenizer, save_tiny

__all__ = [
    "SCALAR_FILE",
    "AdapterError",
    "ModelLoadError",
    "ScalarModel",
    "ScalarOutput",
    "adapters_disabled",
    "apply_peft",
    "build_tiny_model",
    "build_tiny_tokenizer",
    "find_peft_model",
    "last_token_index",
    "load_lm",
    "load_scalar_model",
    "load_tokenizer",
    "merge_adapters",
    "reference_forward",
    "resolve_dtype",
    "save_model",
    "save_scalar_model",
    "save_tiny",
    "trainable_parameter_summary",
]
