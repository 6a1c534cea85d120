"""SFT examples: demonstrations -> token rows (templated, completion-only labels), packing, batches.

A *row* is what one batch slot holds: one example, or with packing several examples laid end to
end. Packed rows carry position ids that restart at 0 for every example and no attention mask;
transformers reads the restarts as example boundaries and builds a block-diagonal causal mask (its
SDPA, eager and FlashAttention paths all do), so no token ever sees another example's tokens. The
first token of every example is never a target, so nothing is predicted across a boundary either.
Call the model with `use_cache=False`: when it builds a KV cache, transformers skips that detection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rlhf.data.packing import best_fit, packed_positions
from rlhf.data.records import Demonstration
from rlhf.data.templates import PromptRenderer
from rlhf.data.tokenize import IGNORE_INDEX, EncodedExample, TruncationStats, encode_example


@dataclass
class Row:
    """One batch slot: an example, or several packed ones."""

    input_ids: list[int]
    """(T,) token ids, T <= max_length."""
    labels: list[int]
    """(T,) targets; IGNORE_INDEX where no loss is taken (prompts with completion-only loss, the
    first token of each example)."""
    lengths: list[int]
    """Length of each example in the row, in order (one entry when not packed)."""
    prompt_lens: list[int] | None = None
    """Prompt tokens at the start of each example, in order (BOS included)."""

    @property
    def num_targets(self) -> int:
        """Tokens that count in the loss (labels[0] is never predicted)."""
        return sum(label != IGNORE_INDEX for label in self.labels[1:])


def encode_demonstrations(
    records: list[Demonstration],
    renderer: PromptRenderer,
    tokenizer: Any,
    max_length: int,
    max_prompt_length: int | None,
    completion_only: bool,
) -> tuple[list[EncodedExample], TruncationStats]:
    """Template and tokenize every record; `completion_only=False` makes every token a target."""
    stats = TruncationStats(max_length)
    examples = []
    for record in records:
        prompt_text = "" if record.plain_text else renderer.render(record.prompt)
        example = encode_example(tokenizer, prompt_text, record.completion, max_length, max_prompt_length)
        if not completion_only:
            example.labels = list(example.input_ids)
        stats.add(example)
        examples.append(example)
    return examples, stats


def to_rows(examples: list[EncodedExample], max_length: int, packing: bool) -> list[Row]:
    """One row per example, or examples packed best-fit into rows of at most `max_length` tokens."""
    if not packing:
        return [_row([example]) for example in examples]
    bins = best_fit([len(example.input_ids) for example in examples], max_length)
    return [_row([examples[i] for i in members]) for members in bins]


def _row(examples: list[EncodedExample]) -> Row:
    input_ids, labels = [], []
    for example in examples:
        input_ids += example.input_ids
        # Position 0 of an example would be predicted from the previous example's last token.
        labels += [IGNORE_INDEX] + example.labels[1:]
    return Row(
        input_ids, labels, [len(example.input_ids) for example in examples], [e.prompt_len for e in examples]
    )


def collate(rows: list[Row], pad_id: int, packed: bool) -> dict[str, Any]:
    """A batch (each tensor (B, T), T = the longest row), padded on the right.

    Unpacked: input_ids, attention_mask, labels. Packed: input_ids, position_ids, labels, and no
    attention mask (the positions mark the examples; the padding tail is one more segment that
    nothing attends to and that carries no targets).
    """
    import torch

    width = max(len(row.input_ids) for row in rows)
    shape = (len(rows), width)
    input_ids = torch.full(shape, pad_id, dtype=torch.long)
    labels = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros(shape, dtype=torch.long)
    positions = torch.zeros(shape, dtype=torch.long)
    for b, row in enumerate(rows):
        n = len(row.input_ids)
        input_ids[b, :n] = torch.tensor(row.input_ids)
        labels[b, :n] = torch.tensor(row.labels)
        mask[b, :n] = 1
        positions[b] = torch.tensor(packed_positions(row.lengths, width))
    if packed:
        return {"input_ids": input_ids, "position_ids": positions, "labels": labels}
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def target_count(batch: dict[str, Any]) -> int:
    """Tokens of a batch that count in the loss: every label of an encoder-decoder's answers, or a
    causal LM's labels after the first column (nothing predicts column 0)."""
    labels = batch["labels"]
    if "decoder_input_ids" in batch:
        return int((labels != IGNORE_INDEX).sum())
    return int((labels[:, 1:] != IGNORE_INDEX).sum())
