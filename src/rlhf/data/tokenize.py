"""Turn records into token ids: prompt rendering, completion-only labels, truncation, padding.

Works with any Hugging Face tokenizer. The prompt is encoded with the tokenizer's special tokens
(so BOS appears once, at the start) and the completion without them, then EOS is appended. The
two parts are tokenized separately, so the ids at their boundary can differ from tokenizing the
concatenated text; what the model learns to produce is exactly the completion's own ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from rlhf.data.records import Message, Prompt

if TYPE_CHECKING:
    import torch

IGNORE_INDEX = -100
"""Label value PyTorch's cross-entropy skips: set on prompt and padding positions."""

FALLBACK_TAGS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}
"""Role tags of the fallback chat template, used when a tokenizer has none. Each message renders
as `<tag>\\n<content>\\n`; the generation prompt is `<|assistant|>\\n`."""


def render_prompt(prompt: Prompt, tokenizer: Any, *, add_generation_prompt: bool = True) -> str:
    """Prompt text for the model: raw text as it is; messages through the tokenizer's chat template,
    or through the fallback template (see `FALLBACK_TAGS`) when it has none."""
    if isinstance(prompt, str):
        return prompt
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": message.role, "content": message.content} for message in prompt]
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )
    return render_fallback(prompt, add_generation_prompt=add_generation_prompt)


def render_fallback(messages: tuple[Message, ...], *, add_generation_prompt: bool = True) -> str:
    """The fallback chat template: deterministic, readable, and free of model-specific tokens."""
    text = "".join(f"{FALLBACK_TAGS[message.role]}\n{message.content}\n" for message in messages)
    return text + f"{FALLBACK_TAGS['assistant']}\n" if add_generation_prompt else text


@dataclass
class EncodedExample:
    """One prompt + completion as token ids, ready to pad into a batch."""

    input_ids: list[int]
    """(T,) prompt ids then completion ids (EOS last when added), T <= max_length."""
    labels: list[int]
    """(T,) IGNORE_INDEX over the prompt, the completion's ids after it (completion-only loss)."""
    prompt_len: int
    """Number of prompt ids at the start of `input_ids` (BOS included)."""
    truncated: bool
    """Whether any token of the prompt or the completion was cut."""
    completion_truncated: bool = False
    """Whether the completion itself had to be cut at its end (it alone exceeded max_length)."""


def encode_example(
    tokenizer: Any,
    prompt_text: str,
    completion_text: str,
    max_length: int,
    max_prompt_length: int | None = None,
    add_eos: bool = True,
) -> EncodedExample:
    """Encode a prompt and its completion, fitting both into `max_length` tokens.

    Truncation keeps the completion whole and cuts the prompt from the left (the end of a prompt,
    next to the answer, matters most), keeping a leading BOS. `max_prompt_length` caps the prompt
    (BOS included) the same way. Only a completion that alone does not fit loses its end.
    """
    prompt_ids = encode_prompt(tokenizer, prompt_text)
    completion_ids = list(tokenizer(completion_text, add_special_tokens=False)["input_ids"])
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    if add_eos and eos is not None and completion_ids[-1:] != [eos]:
        completion_ids.append(eos)
    head = prompt_ids[:1] if bos is not None and prompt_ids[:1] == [bos] else []
    body = prompt_ids[len(head) :]
    original = len(body) + len(completion_ids)
    if max_prompt_length is not None:
        body = _keep_last(body, max(0, max_prompt_length - len(head)))
    completion_room = max_length - len(head)
    completion_truncated = len(completion_ids) > completion_room
    if completion_truncated:
        completion_ids, body = completion_ids[:completion_room], []
    else:
        body = _keep_last(body, completion_room - len(completion_ids))
    prompt = head + body
    return EncodedExample(
        input_ids=prompt + completion_ids,
        labels=[IGNORE_INDEX] * len(prompt) + completion_ids,
        prompt_len=len(prompt),
        truncated=len(body) + len(completion_ids) < original,
        completion_truncated=completion_truncated,
    )


def encode_prompt(tokenizer: Any, prompt_text: str, max_length: int | None = None) -> list[int]:
    """A rendered prompt's ids with the tokenizer's special tokens, BOS once; longer than
    `max_length` loses its start (keeping BOS), like the prompt in `encode_example`."""
    ids = list(tokenizer(prompt_text, add_special_tokens=True)["input_ids"])
    bos = tokenizer.bos_token_id
    if bos is not None and ids[:2] == [bos, bos]:
        ids = ids[1:]  # the chat template wrote BOS into the text and the tokenizer added one
    if max_length is None or len(ids) <= max_length:
        return ids
    head = ids[:1] if bos is not None and ids[:1] == [bos] else []
    return head + _keep_last(ids[len(head) :], max(0, max_length - len(head)))


def _keep_last(ids: list[int], count: int) -> list[int]:
    return ids[len(ids) - count :] if len(ids) > count else ids


@dataclass
class TruncationStats:
    """How many records had to be cut, so a stage can report it (nothing is dropped silently)."""

    max_length: int
    """The token limit the records were fitted into."""
    total: int = 0
    """Records encoded."""
    truncated: int = 0
    """Records with any sequence cut."""
    completion_truncated: int = 0
    """Records with a completion that lost its end."""

    def add(self, *examples: EncodedExample) -> None:
        """Count one record, encoded as one or more examples (e.g. chosen and rejected)."""
        self.total += 1
        self.truncated += any(example.truncated for example in examples)
        self.completion_truncated += any(example.completion_truncated for example in examples)

    def summary(self) -> str:
        """E.g. `12 of 500 records truncated to 512 tokens (2 lost the end of their completion)`."""
        text = f"{self.truncated} of {self.total} records truncated to {self.max_length} tokens"
        if self.completion_truncated:
            text += f" ({self.completion_truncated} lost the end of their completion)"
        return text


def pad_batch(
    sequences: list[list[int]],
    pad_id: int,
    side: Literal["left", "right"] = "right",
    label_sequences: list[list[int]] | None = None,
) -> dict[str, torch.Tensor]:
    """Pad to the longest sequence: `right` for training, `left` for generation (so every prompt
    ends at the last column). Returns input_ids, attention_mask (1 on real tokens) and labels,
    each (B, T) long; labels are `label_sequences` (default: the ids) with IGNORE_INDEX on padding."""
    import torch

    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    if not sequences:
        raise ValueError("pad_batch needs at least one sequence")
    labels_in = sequences if label_sequences is None else label_sequences
    if len(labels_in) != len(sequences) or any(len(a) != len(b) for a, b in zip(sequences, labels_in)):
        raise ValueError("label_sequences must match sequences in number and lengths")
    width = max(len(sequence) for sequence in sequences)
    shape = (len(sequences), width)
    input_ids = torch.full(shape, pad_id, dtype=torch.long)  # (B, T)
    attention_mask = torch.zeros(shape, dtype=torch.long)  # (B, T)
    labels = torch.full(shape, IGNORE_INDEX, dtype=torch.long)  # (B, T)
    for row, (sequence, label_row) in enumerate(zip(sequences, labels_in)):
        start = width - len(sequence) if side == "left" else 0
        span = slice(start, start + len(sequence))
        input_ids[row, span] = torch.tensor(sequence, dtype=torch.long)
        attention_mask[row, span] = 1
        labels[row, span] = torch.tensor(label_row, dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
