"""Held-out language-modelling loss: how well a model still predicts text it was never trained on,
the first measure of what alignment cost (InstructGPT's "alignment tax"; catastrophic forgetting).

Each file is read as SFT reads data (any demonstration format, or plain text): a demonstration's
answer tokens are scored given its prompt (rendered with the same template as in training), plain
text on every token. The loss is the token-weighted mean NLL in nats (`rlhf.training.heldout`),
with its perplexity and the number of tokens.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from rlhf.config.parts import DataConfig, ModelConfig, PromptConfig


def text_rows(path: str, tokenizer: Any, prompt: PromptConfig, max_length: int) -> tuple[list, str]:
    """(one unpacked row per record of `path`, a line on what was read and cut)."""
    from rlhf.data import PromptRenderer, load_records
    from rlhf.data.examples import encode_demonstrations, to_rows

    loaded = load_records(DataConfig(path=path, max_length=max_length), expect="sft")
    records = loaded.demonstrations()
    renderer = PromptRenderer(prompt, tokenizer)
    examples, stats = encode_demonstrations(records, renderer, tokenizer, max_length, None, True)
    return to_rows(examples, max_length, False), f"{loaded.report.summary()}; {stats.summary()}"


def lm_losses(
    model_path: str,
    paths: list[str],
    *,
    model: ModelConfig | None = None,
    prompt: PromptConfig | None = None,
    max_length: int = 512,
    batch_size: int = 16,
    device: str | None = None,
) -> dict[str, dict[str, Any]]:
    """path -> {loss, perplexity, tokens, data}: the held-out loss of the model at `model_path` on
    each file (`model`: loading settings; `prompt`: how prompts are rendered, as in training)."""
    from accelerate import Accelerator

    from rlhf.models import load_lm, load_tokenizer
    from rlhf.training.heldout import evaluate

    model_cfg = dataclasses.replace(model or ModelConfig(), path=model_path)
    tokenizer = load_tokenizer(model_cfg)
    where = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    lm = load_lm(model_cfg, for_training=False, tokenizer=tokenizer).to(where)
    accelerator = Accelerator(cpu=where.type == "cpu")
    out: dict[str, dict[str, Any]] = {}
    for path in paths:
        rows, summary = text_rows(path, tokenizer, prompt or PromptConfig(), max_length)
        result = evaluate(accelerator, lm, rows, batch_size, tokenizer.pad_token_id or 0, packed=False)
        out[path] = {**result, "data": summary}
    del lm
    return out
