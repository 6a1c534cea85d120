"""Sampling completions from a causal LM: batched, left padded, with the KV cache.

    completions = generate_completions(model, tokenizer, prompt_ids, SamplingConfig(), per_prompt=4)
    # -> [[4 texts of prompt 0], [4 texts of prompt 1], ...]

Pure functions of (model, tokenizer, token ids, settings), for every stage that samples:
`rlhf generate`, PPO rollouts, best-of-N. They neither load nor move the model, nor change its
train/eval mode: pass it ready (eval mode, on its device). Prompts are token ids, already
rendered and encoded (`rlhf.data.PromptRenderer`, `rlhf.data.encode_prompt`).

Reproducibility: `generate_samples` seeds torch once (`sampling.seed`) and draws everything from
that one stream, so the same seed, model, prompts, settings (`batch_size` included: it decides
which random numbers each sequence gets) and device give the same completions. GPU kernels may
differ in the last bits between GPU models or library versions, and then so can the samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from rlhf.generation.config import SamplingConfig


@dataclass
class Sample:
    """One generated completion."""

    text: str
    """The completion: decoded without special tokens as the continuation of its prompt (a leading
    space is kept), cut right before the first stop string."""
    token_ids: list[int]
    """(N,) the ids the model generated, N <= max_new_tokens: through the first EOS if there is one;
    the padding after a stop-string stop is left out."""
    finish: Literal["eos", "stop", "length"]
    """Why it ended: the model's EOS, a stop string, or `max_new_tokens`."""
    logprobs: list[float] | None = None
    """(N,) the engine's log-probability of each token of `token_ids`, under the distribution it
    sampled from (temperature, top-k, top-p applied); None from the built-in engine (the trainer
    computes its own)."""


def generate_completions(
    model: Any,
    tokenizer: Any,
    prompt_ids: list[list[int]],
    sampling: SamplingConfig,
    *,
    per_prompt: int = 1,
    progress: bool = True,
) -> list[list[str]]:
    """`per_prompt` completion texts per prompt, in prompt order (see `generate_samples`)."""
    groups = generate_samples(
        model, tokenizer, prompt_ids, sampling, per_prompt=per_prompt, progress=progress
    )
    return [[sample.text for sample in group] for group in groups]


def generate_samples(
    model: Any,
    tokenizer: Any,
    prompt_ids: list[list[int]],
    sampling: SamplingConfig,
    *,
    per_prompt: int = 1,
    unique: bool = False,
    max_retries: int = 3,
    progress: bool = True,
) -> list[list[Sample]]:
    """K = `per_prompt` samples per prompt, each prompt's in draw order.

    `model` is a causal LM (sampled with `generate`, `sampling.batch_size` sequences at a time) or
    a generation engine already synced and set up with `sampling` (`rlhf.engines.Generator`, e.g.
    vLLM). Seeds torch with `sampling.seed` (unless null) first; engines draw their seeds from
    torch's stream, so the seed reproduces their samples too. With `unique`, a sample whose text
    repeats an earlier one of the same prompt is drawn again, for up to `max_retries` rounds;
    any repeats left after that are kept (count them with `count_repeats`).
    """
    import torch

    if sampling.seed is not None:
        torch.manual_seed(sampling.seed)  # seeds the CPU and every CUDA device

    def draw(ids: list[list[int]], desc: str) -> list[Sample]:
        if hasattr(model, "sync") and hasattr(model, "generate") and not isinstance(model, torch.nn.Module):
            return model.generate(ids, desc=desc)
        return sample_sequences(model, tokenizer, ids, sampling, progress=progress, desc=desc)

    k = per_prompt
    # The K copies of a prompt sit next to each other: batches then hold few distinct lengths.
    flat = draw([ids for ids in prompt_ids for _ in range(k)], "generate")
    groups = [flat[index * k : (index + 1) * k] for index in range(len(prompt_ids))]
    if not unique:
        return groups
    for _ in range(max_retries):
        slots = [(index, j) for index, group in enumerate(groups) for j in repeated_indices(group)]
        if not slots:
            break
        redrawn = draw([prompt_ids[index] for index, _ in slots], "re-draw repeats")
        for (index, j), sample in zip(slots, redrawn):
            groups[index][j] = sample
    return groups


def repeated_indices(group: Sequence[Sample | str]) -> list[int]:
    """Positions whose text equals that of an earlier item (the first occurrence is not counted)."""
    seen: set[str] = set()
    repeats = []
    for index, item in enumerate(group):
        text = item.text if isinstance(item, Sample) else item
        if text in seen:
            repeats.append(index)
        seen.add(text)
    return repeats


def count_repeats(groups: list[list[Sample]] | list[list[str]]) -> int:
    """How many samples repeat an earlier one of the same prompt."""
    return sum(len(repeated_indices(group)) for group in groups)


def sample_sequences(
    model: Any,
    tokenizer: Any,
    prompt_ids: list[list[int]],
    sampling: SamplingConfig,
    *,
    progress: bool = True,
    desc: str = "generate",
) -> list[Sample]:
    """One sample per entry of `prompt_ids` (repeat an entry to draw it several times), in order.

    Runs `model.generate` on `sampling.batch_size` sequences at a time, left padded so that every
    prompt ends at the last column and the new tokens line up; an encoder-decoder's prompts are
    right padded for its encoder and its answers are what its decoder writes after the start
    token. Ignores `seed`: it draws from torch's random stream as it stands.
    """
    import torch

    from rlhf.data import pad_batch
    from rlhf.models.seq2seq import is_seq2seq
    from rlhf.tracking import progress_bar

    if any(not ids for ids in prompt_ids):
        raise ValueError("every prompt needs at least one token")
    kwargs = generation_kwargs(model, tokenizer, sampling)
    eos_ids = set(kwargs["eos_token_id"])
    device = next(model.parameters()).device
    seq2seq = is_seq2seq(model)
    samples: list[Sample] = []
    with progress_bar(len(prompt_ids), desc, enabled=progress, unit="seq") as bar:
        for start in range(0, len(prompt_ids), sampling.batch_size):
            chunk = prompt_ids[start : start + sampling.batch_size]
            batch = pad_batch(chunk, tokenizer.pad_token_id, side="right" if seq2seq else "left")
            input_ids = batch["input_ids"].to(device)  # (B, T)
            attention_mask = batch["attention_mask"].to(device)  # (B, T)
            # no_grad, not inference_mode: a ZeRO-3 model gathers its weights during the forward,
            # and weights gathered in inference mode cannot serve a later training step.
            with torch.no_grad():
                out = model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
            # (B, N) the answer, padded after a finish: after the prompt, or after the decoder's start
            new_ids = out[:, 1 if seq2seq else input_ids.shape[1] :].tolist()
            for prompt, ids in zip(chunk, new_ids):
                before = [] if seq2seq else prompt[-1:]  # a decoder's answer continues nothing
                samples.append(finish_sample(ids, before, tokenizer, sampling.stop, eos_ids))
            bar.update(len(chunk))
    return samples


def generation_kwargs(model: Any, tokenizer: Any, sampling: SamplingConfig) -> dict[str, Any]:
    """Keyword arguments for `model.generate` that carry out `sampling`.

    Every sampling knob is passed explicitly, so the model's own `generation_config` defaults
    (e.g. transformers' top_k=50, or a chat model's preferred temperature) never apply unseen.
    EOS is every id the model's generation config or the tokenizer names (chat models often end
    a turn with a token other than the tokenizer's EOS).
    """
    kwargs: dict[str, Any] = {
        "max_new_tokens": sampling.max_new_tokens,
        "do_sample": not sampling.greedy,
        "repetition_penalty": sampling.repetition_penalty,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": eos_token_ids(model, tokenizer),
        "use_cache": True,
    }
    if sampling.greedy:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    else:
        kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k)
    if sampling.stop:
        # Stops each sequence early once its text ends in a stop string; the cut is `finish_sample`'s job.
        kwargs.update(stop_strings=list(sampling.stop), tokenizer=tokenizer)
    if weights_sharded(model):
        # Each forward gathers the layers' weights from every process: all keep stepping until the
        # last one's sequences are done (transformers detects ZeRO-3, not torch's own FSDP2).
        kwargs["synced_gpus"] = True
    return kwargs


def weights_sharded(model: Any) -> bool:
    """Whether `model`'s weights are split over the processes of a running process group (FSDP2's
    DTensors, DeepSpeed ZeRO-3's partitions), so that every forward is a collective."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return False
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) or hasattr(p, "ds_id") for p in model.parameters())


def eos_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """The ids that end a completion: the model's generation config's EOS ids, then the tokenizer's."""
    ids: list[int] = []
    generation_config = getattr(model, "generation_config", None)
    configured = getattr(generation_config, "eos_token_id", None)
    for value in [*(configured if isinstance(configured, list) else [configured]), tokenizer.eos_token_id]:
        if value is not None and value not in ids:
            ids.append(int(value))
    if not ids:
        raise ValueError("neither the model's generation config nor the tokenizer names an EOS token")
    return ids


def decode_continuation(tokenizer: Any, prefix_ids: list[int], ids: list[int]) -> str:
    """`ids` decoded as the continuation of `prefix_ids` (e.g. the prompt's last token), without
    special tokens. Decoded alone, SentencePiece-style tokenizers drop the leading space of the
    first token (`▁there` -> `there`), which would glue a completion onto its prompt."""
    head = tokenizer.decode(prefix_ids, skip_special_tokens=True)
    whole = tokenizer.decode([*prefix_ids, *ids], skip_special_tokens=True)
    if whole.startswith(head):
        return whole[len(head) :]
    return tokenizer.decode(ids, skip_special_tokens=True)  # e.g. a character split across the two


def finish_sample(
    ids: list[int], prefix_ids: list[int], tokenizer: Any, stop: list[str] | None, eos_ids: set[int]
) -> Sample:
    """The sample of one row of generated ids (padding after a finish included): cut after the
    first EOS, its text cut right before the first stop string. Every engine cuts with this."""
    end = next((index + 1 for index, token in enumerate(ids) if token in eos_ids), None)
    if end is not None:
        ids = ids[:end]
    text = decode_continuation(tokenizer, prefix_ids, ids)
    cut = min((index for index in (text.find(s) for s in stop or ()) if index >= 0), default=None)
    if cut is not None:
        # The stop-string criterion pads a sequence that stopped early while others go on.
        while ids and ids[-1] == tokenizer.pad_token_id:
            ids = ids[:-1]
        return Sample(text[:cut], ids, "stop")
    return Sample(text, ids, "eos" if end is not None else "length")
