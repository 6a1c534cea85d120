"""A scalar head on a causal LM: the reward model and the PPO value model.

The model is a transformers `AutoModelForSequenceClassification` with one label (for a causal-LM
checkpoint transformers adds a fresh `score` Linear(hidden, 1)), so a saved one loads back with
plain transformers. `ScalarModel` runs its backbone and applies the head at every position,
giving per-token values for PPO and the value at the last real token for rewards. The last
token is found from `attention_mask`, never from the pad id (many models pad with EOS), so
left and right padding give the same result.

Each kind of checkpoint is read where its own sequence-classification class reads it: a decoder's
head at the last token; an encoder's classifier on its pooled first token; an encoder-decoder's
head on the decoder state at the last token, the encoder reading the whole text and the decoder the
same text shifted right (as `BartForSequenceClassification` reads at the final EOS). As a PPO critic
an encoder-decoder reads the prompt with its encoder and the response with its decoder, so that
V(s_t) sees nothing of the response from t on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForSequenceClassification

from rlhf.config.parts import ModelConfig, PeftConfig
from rlhf.files import atomic_directory
from rlhf.models.adapters import AdapterError, find_peft_model, merge_adapters
from rlhf.models.load import load_pretrained, load_tokenizer
from rlhf.models.save import save_pretrained

SCALAR_FILE = "rlhf_scalar.json"
_HEAD_NAMES = ("score", "classifier", "classification_head")


@dataclass
class ScalarOutput:
    values: torch.Tensor
    """(B, T) float32: the head's scalar at every position (padding positions hold 0)."""
    last: torch.Tensor
    """(B,) float32: the scalar at the last position whose attention_mask is 1 (the reward)."""


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B,) index of the last 1 in each row of `attention_mask` (B, T); left or right padding."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)  # (T,)
    # Strictly increasing over the kept positions, so the max sits at the last kept one.
    return (positions * attention_mask.long()).argmax(dim=1)


class ScalarModel(nn.Module):
    """A sequence-classification model with one label, read out at every token.

    `seq_model` is the transformers model or a `PeftModel` around it (LoRA with task SEQ_CLS,
    which trains and saves the head in full). `extra` holds what `rlhf_scalar.json` stores,
    e.g. the reward mean and std used for normalisation.
    """

    def __init__(self, seq_model: nn.Module, extra: dict | None = None, *, note: str | None = None) -> None:
        super().__init__()
        self.seq_model = seq_model
        self.extra = dict(extra or {})
        self.note = note
        """What loading changed that the run should say (a classifier's head replaced), or None."""

    @property
    def kind(self) -> str:
        """`causal`, `seq2seq` or `encoder` (see `rlhf.models.kind`)."""
        from rlhf.models.kind import kind_of_config

        return kind_of_config(self.config)

    @property
    def encoder(self) -> bool:
        """An encoder-only classifier (BERT, RoBERTa, DeBERTa, ...): its own head reads its own
        pooled (first) token, so it gives one value per sequence, not one per token."""
        return self.kind == "encoder"

    @property
    def reads(self) -> str:
        """Where the reward is read, in words (for the run's log)."""
        return {
            "encoder": "its classifier's pooled first token",
            "seq2seq": "the decoder's last token (the encoder reads the whole text)",
        }.get(self.kind, "the last token")

    @property
    def classifier(self) -> Any:
        """The transformers model inside (LoRA layers are injected into it in place)."""
        peft_model = find_peft_model(self.seq_model)
        return peft_model.get_base_model() if peft_model is not None else self.seq_model

    @property
    def config(self):
        return self.classifier.config

    @property
    def backbone(self) -> nn.Module:
        classifier = self.classifier
        return getattr(classifier, classifier.base_model_prefix)

    @property
    def head(self) -> nn.Module:
        for name in _HEAD_NAMES:
            module = getattr(self.classifier, name, None)
            if isinstance(module, nn.Module):
                return module
        raise AttributeError(
            f"no scalar head ({' or '.join(_HEAD_NAMES)}) on {type(self.classifier).__name__}"
        )

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        position_ids: torch.Tensor | None = None,
        last_index: tuple[torch.Tensor, torch.Tensor] | None = None,
        answer_width: int | None = None,
    ) -> ScalarOutput:
        """Padded rows: `input_ids` and `attention_mask` (B, T), one sequence per row; `last` holds
        each row's value at its last real token. Packed rows (see `rlhf.data.packing`): no mask,
        `position_ids` (B, T) restarting at each sequence, and `last_index` = (row, column) of each
        sequence's last token, (N,) each; `last` holds those N values and `values` is not masked.
        `answer_width` N (an encoder-decoder critic): the rows are a left-padded prompt then a
        right-padded response of N columns, and `values` (B, N) is V(s_t) before each response token."""
        if self.encoder:
            return self._sequence_values(input_ids, attention_mask)
        if self.kind == "seq2seq":
            if attention_mask is None:
                raise ValueError(
                    "an encoder-decoder reads padded rows (with attention_mask), not packed ones"
                )
            if answer_width is not None:
                return self._answer_values(input_ids, attention_mask, answer_width)
            return self._decoder_values(input_ids, attention_mask)
        if attention_mask is None:
            if position_ids is None or last_index is None:
                raise ValueError("packed input needs position_ids and last_index (or pass attention_mask)")
            values = self._values(input_ids, None, position_ids)
            return ScalarOutput(values=values, last=values[last_index[0], last_index[1]])
        # Positions count real tokens only, so a left-padded sequence is seen exactly like the
        # same sequence padded on the right (this matters for absolute position embeddings).
        position_ids = (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)  # (B, T)
        values = self._values(input_ids, attention_mask, position_ids).masked_fill(attention_mask == 0, 0.0)
        last = values.gather(1, last_token_index(attention_mask)[:, None]).squeeze(1)  # (B,)
        return ScalarOutput(values=values, last=last)

    def _sequence_values(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> ScalarOutput:
        """An encoder's value: its classifier's output, pooled where the architecture pools (its
        first token, through its own pooler); `values` repeats it at every real position."""
        if attention_mask is None:
            raise ValueError("an encoder-only model reads padded rows (with attention_mask), not packed ones")
        last = self.seq_model(input_ids=input_ids, attention_mask=attention_mask).logits[:, 0].float()  # (B,)
        values = last[:, None].expand(input_ids.shape).masked_fill(attention_mask == 0, 0.0)  # (B, T)
        return ScalarOutput(values=values, last=last)

    def _decoder_values(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> ScalarOutput:
        """An encoder-decoder's values: the encoder reads each whole row, the decoder the same row
        shifted right behind its start token, the head reads every decoder state; `last` at the
        last real token (transformers' own reading when the text ends with EOS)."""
        from rlhf.models.seq2seq import right_align, undo_right_align

        pad_id = int(self.config.pad_token_id or 0)
        ids, mask = right_align(input_ids, attention_mask, pad_id)  # (B, T) each
        values = self._seq2seq_head(ids, mask, ids, mask).masked_fill(mask == 0, 0.0)  # (B, T)
        last = values.gather(1, last_token_index(mask)[:, None]).squeeze(1)  # (B,)
        return ScalarOutput(values=undo_right_align(values, attention_mask), last=last)

    def _answer_values(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, n: int) -> ScalarOutput:
        """An encoder-decoder critic: (B, N) values at the decoder's states before each of the last
        N columns (the response); the encoder reads the prompt alone."""
        from rlhf.models.seq2seq import right_align

        pad_id = int(self.config.pad_token_id or 0)
        prompt, prompt_mask = right_align(input_ids[:, :-n], attention_mask[:, :-n], pad_id)
        answer_mask = attention_mask[:, -n:]
        values = self._seq2seq_head(prompt, prompt_mask, input_ids[:, -n:], answer_mask)
        values = values.masked_fill(answer_mask == 0, 0.0)  # (B, N)
        last = values.gather(1, last_token_index(answer_mask)[:, None]).squeeze(1)
        return ScalarOutput(values=values, last=last)

    def _seq2seq_head(self, enc_ids, enc_mask, dec_ids, dec_mask) -> torch.Tensor:
        """(B, N) the head on the decoder's states: the encoder reads `enc_ids`, the decoder the
        right-padded `dec_ids` (B, N) by teacher forcing (position t reads the tokens before t)."""
        from rlhf.models.seq2seq import decoder_inputs, start_token

        pad_id = int(self.config.pad_token_id or 0)
        shifted, shifted_mask = decoder_inputs(dec_ids, dec_mask, start_token(self.classifier), pad_id)
        hidden = self.backbone(
            input_ids=enc_ids,
            attention_mask=enc_mask,
            decoder_input_ids=shifted,
            decoder_attention_mask=shifted_mask,
            use_cache=False,
        ).last_hidden_state  # (B, N, H): the decoder's
        return self.head(hidden).squeeze(-1).float()

    def _values(self, input_ids, attention_mask, position_ids) -> torch.Tensor:
        hidden = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        ).last_hidden_state  # (B, T, H)
        return self.head(hidden).squeeze(-1).float()  # (B, T)


def load_scalar_model(
    model_cfg: ModelConfig,
    peft_cfg: PeftConfig | None = None,
    *,
    for_training: bool = True,
    tokenizer=None,
) -> ScalarModel:
    """A reward/value model from a causal-LM checkpoint, a one-label classifier, or `builtin:tiny`.

    A causal-LM checkpoint gets a new randomly initialised head (transformers reports it as
    missing: expected). A directory saved by `save_scalar_model` loads with its head and its
    `rlhf_scalar.json`; an adapter directory loads as base plus adapter. The model's pad id is
    set from the tokenizer (loaded if not given) so transformers' own pooling works too.
    """
    if peft_cfg is not None and peft_cfg.method == "prompt_tuning":
        raise AdapterError("prompt tuning is not supported for reward/value models; use lora or qlora")
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(model_cfg)
    labels = _checkpoint_labels(model_cfg)
    seq_model = load_pretrained(
        AutoModelForSequenceClassification,
        model_cfg,
        peft_cfg,
        for_training=for_training,
        task_type="SEQ_CLS",
        tokenizer=tokenizer,
        num_labels=1,
        **({"ignore_mismatched_sizes": True} if len(labels) > 1 else {}),
    )
    extra_file = Path(model_cfg.path).expanduser() / SCALAR_FILE
    extra = json.loads(extra_file.read_text()) if extra_file.is_file() else {}
    note = None
    if len(labels) > 1:
        note = (
            f"{model_cfg.path} classifies into {len(labels)} labels ({', '.join(labels)}): its head is replaced "
            "by a new one-label head"
        )
    model = ScalarModel(seq_model, extra, note=note)
    return model if for_training else model.eval()


def _checkpoint_labels(model_cfg: ModelConfig) -> list[str]:
    """The label names of a classifier checkpoint's head ([] for a checkpoint without one)."""
    from rlhf.config.parts import BUILTIN_TINY
    from rlhf.models.load import adapter_base_path, read_config

    base = adapter_base_path(model_cfg.path)
    if base == BUILTIN_TINY or (Path(model_cfg.path).expanduser() / "adapter_config.json").is_file():
        return []
    config = read_config(base, trust_remote_code=model_cfg.trust_remote_code, revision=model_cfg.revision)
    architectures = getattr(config, "architectures", None) or []
    if not any(name.endswith("ForSequenceClassification") for name in architectures):
        return []  # a language model: transformers adds a fresh head of the asked size
    id2label = getattr(config, "id2label", None) or {}
    return [str(id2label[key]) for key in sorted(id2label, key=int)]


def save_scalar_model(
    model: ScalarModel, directory: str | Path, tokenizer, extra: dict | None = None, *, merge: bool = True
) -> ScalarModel:
    """Save for plain `AutoModelForSequenceClassification.from_pretrained`, plus `rlhf_scalar.json`.

    `extra` (JSON-serialisable, e.g. {"reward_mean": m, "reward_std": s}) is merged into
    `model.extra` and written. LoRA is merged into the weights first (in place: `model` holds
    the merged model afterwards); `merge=False` saves only the adapter and head, which
    `load_scalar_model` loads but plain transformers does not.
    """
    from rlhf.models.finite import check_finite_weights

    check_finite_weights(model, directory)
    if merge:
        model.seq_model = merge_adapters(model.seq_model)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.extra = {**model.extra, **(extra or {})}
    with atomic_directory(directory) as staging:
        save_pretrained(model.seq_model, staging)
        tokenizer.save_pretrained(staging)
        (staging / SCALAR_FILE).write_text(json.dumps(model.extra, indent=2, sort_keys=True) + "\n")
    return model
