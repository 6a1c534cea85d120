"""Sequence log-probabilities of many completions in one forward pass (DPO, RRHF).

The groups of a micro-batch (a prompt with its K completions, as the reward stage builds them) are
laid out once: padded one sequence per row, or packed end to end into rows of `data.max_length`
with position ids restarting per sequence. `SequenceLogps` runs the backbone once over all rows
and the LM head only at the positions that predict a completion token, so the prompt's logits
over the vocabulary are never formed. It returns log π(y | x) = Σ_t log π(y_t | x, y_<t) of every
completion and the token log-probs, in group order; pairs and groups index that flat vector.

An encoder-decoder's groups are laid out for it: the prompts, right padded, for its encoder, and the
completions, shifted right behind the decoder's start token, for its decoder (never packed); decoder
position t predicts completion token t (`rlhf.models.seq2seq`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from rlhf.data.rows import pack_sequences, pad_right
from rlhf.models.readout import causal_parts, token_logprobs
from rlhf.preference.groups import Group, Layout, layout_groups


@dataclass
class SequenceBatch:
    """All completions of a micro-batch's groups, and where their completion tokens are."""

    input_ids: torch.Tensor
    """(R, T) long: one sequence per row (padded) or several end to end (packed)."""
    attention_mask: torch.Tensor | None
    """(R, T) long, padded layout only."""
    position_ids: torch.Tensor | None
    """(R, T) long, packed layout only: 0.. for each sequence."""
    rows: torch.Tensor
    """(M,) long: row of the position whose output predicts each completion token."""
    cols: torch.Tensor
    """(M,) long: its column (the token's own column minus one)."""
    targets: torch.Tensor
    """(M,) long: the completion tokens (EOS included)."""
    owner: torch.Tensor
    """(M,) long: the sequence (0..N-1, group order) each completion token belongs to."""
    lengths: torch.Tensor
    """(N,) float32: completion tokens per sequence."""
    layout: Layout
    """Offsets of the groups in the flat (N,) vector, pairs (pairwise), weights."""
    reference: torch.Tensor | None = None
    """(N,) float32 cached reference log-probs of the sequences, when the run caches them."""
    groups: list[int] | None = None
    """Indices of the groups in the run's data (to look up cached values)."""
    decoder_input_ids: torch.Tensor | None = None
    """(R, N) long, an encoder-decoder's layout only: each completion shifted right behind the
    decoder's start token (`input_ids` then holds the prompts, one per row, right padded)."""
    decoder_attention_mask: torch.Tensor | None = None
    """(R, N) long, an encoder-decoder's layout only: 1 on the decoder's real inputs."""

    @property
    def count(self) -> int:
        return self.layout.count

    @property
    def num_sequences(self) -> int:
        return int(self.lengths.numel())

    def inputs(self) -> dict[str, Any]:
        """Keyword arguments of `SequenceLogps.forward`."""
        return {
            "input_ids": self.input_ids, "attention_mask": self.attention_mask,
            "position_ids": self.position_ids, "rows": self.rows, "cols": self.cols,
            "targets": self.targets, "owner": self.owner, "num_sequences": self.num_sequences,
            "decoder_input_ids": self.decoder_input_ids, "decoder_attention_mask": self.decoder_attention_mask,
        }  # fmt: skip

    def to(self, device) -> SequenceBatch:
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return replace(
            self, input_ids=self.input_ids.to(device), attention_mask=move(self.attention_mask),
            position_ids=move(self.position_ids), rows=self.rows.to(device), cols=self.cols.to(device),
            targets=self.targets.to(device), owner=self.owner.to(device), lengths=self.lengths.to(device),
            reference=move(self.reference), decoder_input_ids=move(self.decoder_input_ids),
            decoder_attention_mask=move(self.decoder_attention_mask),
        )  # fmt: skip


def collate_sequences(
    groups: list[Group],
    pad_id: int,
    *,
    pack_width: int | None = None,
    mode: str = "pairwise",
    decoder_start: int | None = None,
) -> SequenceBatch:
    """One `SequenceBatch` of every completion of `groups` (in group order): padded one per row,
    or packed into rows of at most `pack_width` tokens when it is given. `mode` is the reward
    stage's layout mode (`pairwise`: pairs from the groups' ranks; `regression`: none needed).
    `decoder_start`: the decoder's start token of an encoder-decoder, which gets its own layout."""
    sequences = [seq for g in groups for seq in g.input_ids]
    prompt_lens = [p for g in groups for p in _prompt_lens(g)]
    layout = layout_groups(groups, mode, "skip")
    if decoder_start is not None:
        if pack_width is not None:
            raise ValueError("an encoder-decoder reads one prompt per row: its sequences are never packed")
        return _seq2seq_sequences(groups, sequences, prompt_lens, layout, pad_id, decoder_start)
    if pack_width is None:
        ids, mask = pad_right(sequences, pad_id)
        positions, starts = None, [(i, 0) for i in range(len(sequences))]
    else:
        ids, positions, (last_rows, last_cols) = pack_sequences(sequences, pad_id, pack_width)
        mask = None
        starts = [(int(r), int(c) - len(seq) + 1) for r, c, seq in zip(last_rows, last_cols, sequences)]
    rows: list[int] = []
    cols: list[int] = []
    targets: list[int] = []
    owner: list[int] = []
    for index, (seq, prompt_len, (row, start)) in enumerate(zip(sequences, prompt_lens, starts)):
        first = _first_predicted(prompt_len)
        n = len(seq) - first
        rows += [row] * n
        cols += range(start + first - 1, start + len(seq) - 1)
        targets += seq[first:]
        owner += [index] * n
    as_long = lambda v: torch.tensor(v, dtype=torch.long)  # noqa: E731
    return SequenceBatch(
        ids,
        mask,
        positions,
        as_long(rows),
        as_long(cols),
        as_long(targets),
        as_long(owner),
        completion_lengths(groups),
        layout,
    )


def _seq2seq_sequences(groups, sequences, prompt_lens, layout, pad_id: int, start: int) -> SequenceBatch:
    """An encoder-decoder's `SequenceBatch`: prompts (R, P) for the encoder, completions shifted
    right (R, N) for the decoder, whose position t predicts completion token t."""
    from rlhf.models.seq2seq import decoder_inputs, pad_rows

    if any(p < 1 for p in prompt_lens):
        raise ValueError("an encoder-decoder reads its prompt with the encoder: every sequence needs one")
    ids, mask = pad_rows([seq[:p] for seq, p in zip(sequences, prompt_lens)], pad_id)  # (R, P)
    answers = [seq[p:] for seq, p in zip(sequences, prompt_lens)]
    answer_ids, answer_mask = pad_rows(answers, pad_id)  # (R, N)
    dec_ids, dec_mask = decoder_inputs(answer_ids, answer_mask, start, pad_id)
    as_long = lambda v: torch.tensor(v, dtype=torch.long)  # noqa: E731
    return SequenceBatch(
        ids,
        mask,
        None,
        as_long([i for i, a in enumerate(answers) for _ in a]),
        as_long([t for a in answers for t in range(len(a))]),
        as_long([t for a in answers for t in a]),
        as_long([i for i, a in enumerate(answers) for _ in a]),
        completion_lengths(groups),
        layout,
        decoder_input_ids=dec_ids,
        decoder_attention_mask=dec_mask,
    )


def _first_predicted(prompt_len: int) -> int:
    """The first token whose log-prob is read: the completion's first (a token with nothing
    before it has no prediction, so never token 0)."""
    return max(prompt_len, 1)


def _prompt_lens(group: Group) -> list[int]:
    if group.prompt_lens is None:
        raise ValueError("groups for sequence log-probs need their prompt lengths (build_groups sets them)")
    return group.prompt_lens


def completion_lengths(groups: list[Group]) -> torch.Tensor:
    """(N,) float32 completion tokens of every sequence of `groups`, in group order (what the
    sequence log-prob sums over), without laying out any tokens."""
    lengths = [len(seq) - _first_predicted(p) for g in groups for seq, p in zip(g.input_ids, _prompt_lens(g))]
    return torch.tensor(lengths, dtype=torch.float32)


@dataclass
class SequenceOutput:
    logps: torch.Tensor
    """(N,) float32 Σ_t log π(y_t | x, y_<t) of each completion."""
    token_logps: torch.Tensor
    """(M,) float32 the log-prob of each completion token (in `SequenceBatch.targets` order)."""


class SequenceLogps(nn.Module):
    """A causal LM read out at completion tokens; the module Accelerate wraps (DDP hooks see this
    `forward`). The reference is the same module with the adapter switched off (LoRA) or another
    instance around a frozen copy."""

    def __init__(self, lm: nn.Module) -> None:
        super().__init__()
        self.lm = lm

    def forward(
        self,
        input_ids,
        attention_mask,
        position_ids,
        rows,
        cols,
        targets,
        owner,
        num_sequences: int,
        decoder_input_ids=None,
        decoder_attention_mask=None,
    ) -> SequenceOutput:
        if decoder_input_ids is not None:  # an encoder-decoder: its own head on the decoder's positions
            logits = self.lm(
                input_ids=input_ids,
                attention_mask=attention_mask,
                decoder_input_ids=decoder_input_ids,
                decoder_attention_mask=decoder_attention_mask,
                use_cache=False,
            ).logits  # (R, N, V)
            token_logps = token_logprobs(logits[rows, cols], targets).logprobs
        else:
            backbone, head = causal_parts(self.lm)
            hidden = backbone(
                input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
            ).last_hidden_state  # (R, T, H)
            # (M,): the head runs only where a completion token is predicted
            token_logps = token_logprobs(head(hidden[rows, cols]), targets).logprobs
        sums = torch.zeros(num_sequences, dtype=torch.float32, device=token_logps.device)
        return SequenceOutput(sums.index_add(0, owner, token_logps), token_logps)


def packing_isolates(module: nn.Module, groups: list[Group], pad_id: int, width: int, device) -> bool:
    """Whether packed rows give every completion of `groups` the log-prob it gets padded alone.

    A model whose attention ignores position-id restarts lets a packed sequence see the ones
    before it, which moves its log-probs by whole nats; a model that isolates them matches to float
    rounding. Allowed: 1e-3 per token (bf16 rounding stays well under it).
    """
    from rlhf.models.seq2seq import is_seq2seq

    if not groups:
        return True
    if is_seq2seq(getattr(module, "lm", module)):
        return False  # one prompt per row for the encoder: never packed
    was_training = module.training
    module.eval()
    with torch.no_grad():
        padded = collate_sequences(groups, pad_id).to(device)
        packed = collate_sequences(groups, pad_id, pack_width=width).to(device)
        a, b = module(**padded.inputs()).logps, module(**packed.inputs()).logps
    module.train(was_training)
    return bool(((a - b).abs() <= 1e-3 * padded.lengths.clamp(min=1) + 1e-4).all())


def sequence_layout(stage, module: nn.Module, groups: list[Group], pad_id: int, device) -> tuple:
    """(pack_width, decoder_start) of a policy stage: packed rows when `stage` (a `Stage`) packs and
    `module` (a prepared `SequenceLogps`) keeps packed sequences apart (else None); the decoder's
    start token of an encoder-decoder, which has its own layout and is never packed (else None)."""
    from rlhf.models.seq2seq import is_seq2seq, start_token

    lm = getattr(getattr(module, "module", module), "lm", module)
    start = start_token(lm) if is_seq2seq(lm) else None
    width = stage.pack_width(
        lambda width: packing_isolates(module, groups, pad_id, width, device),
        kind="seq2seq" if start is not None else "causal",
    )
    return width, start


def sequence_logps_of(
    accelerator,
    logps_fn,
    groups: list[Group],
    batch_size: int,
    pad_id: int,
    pack_width: int | None = None,
    decoder_start: int | None = None,
) -> list[list[float]]:
    """Every completion's log-prob per group, in order, on every process (each computes every N-th
    batch of groups, then they share). `logps_fn(batch) -> (N,)` runs the model; no gradients.
    `decoder_start`: as in `collate_sequences`."""
    from accelerate.utils import gather_object

    from rlhf.training.sharding import even_batches

    found = []
    with torch.no_grad():
        for chunk, keep in even_batches(accelerator, len(groups), batch_size):
            batch = collate_sequences(
                [groups[i] for i in chunk], pad_id, pack_width=pack_width, decoder_start=decoder_start
            )
            values = logps_fn(batch.to(accelerator.device)).float().cpu().tolist()
            if not keep:
                continue
            for i, begin in zip(chunk, batch.layout.offsets):
                found.append((i, values[begin : begin + len(groups[i].input_ids)]))
    everything = gather_object(found) if accelerator.num_processes > 1 else found
    return [values for _, values in sorted(everything, key=lambda pair: pair[0])]
