"""The actor (and, with a shared critic, the value head) as one module, read out at the response.

A rollout sequence is laid out as the generator produced it: the prompt left padded to the batch's
width P, then the response right padded to width N. Column P-1+t predicts response token t, so one
backbone pass gives, at those N columns, the hidden states that feed both the LM head (log-prob
of each action, entropy) and the value head (V(s_t), the state before action t). The LM head runs
only on those N columns: the prompt's logits over the vocabulary are never formed.

An encoder-decoder policy (T5, BART) reads the same layout differently: its encoder reads the prompt
(moved to the left edge) and its decoder the response by teacher forcing, so decoder position t is
the state before response token t and feeds both heads (`rlhf.models.seq2seq`).

`PolicyValue` is what Accelerate wraps (DDP hooks see its `forward`); the reference model is the
same module with the adapter switched off (LoRA), or a frozen copy (full fine-tuning).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

VALUE_HEAD_FILE = "rlhf_value_head.safetensors"
"""The value head alone (key `weight`, (1, hidden)), saved next to a shared-critic checkpoint."""


@dataclass
class PolicyOutput:
    logprobs: torch.Tensor
    """(B, N) float32 log π(a_t | s_t) of each response token (at temperature `temperature`)."""
    entropy: torch.Tensor | None
    """(B, N) float32 entropy of π(· | s_t), when asked for."""
    values: torch.Tensor | None
    """(B, N) float32 V(s_t) from the shared value head, when there is one."""
    ptx_nll: torch.Tensor | None = None
    """Summed next-token NLL of the PPO-ptx batch passed in, when one was."""


class PolicyValue(nn.Module):
    """A causal LM, optionally with a value head Linear(hidden, 1) on its last hidden states."""

    def __init__(self, lm: Any, *, value_head: bool, temperature: float = 1.0) -> None:
        super().__init__()
        self.lm: Any = lm  # a transformers causal LM (or a PeftModel around one)
        hidden = (
            lm.config.hidden_size
            if hasattr(lm.config, "hidden_size")
            else lm.get_input_embeddings().weight.shape[1]
        )
        self.value_head: nn.Linear | None = nn.Linear(hidden, 1, bias=False) if value_head else None
        if self.value_head is not None:
            nn.init.normal_(self.value_head.weight, std=1.0 / (hidden + 1) ** 0.5)
            self.value_head.to(dtype=torch.float32)
        self.temperature = temperature if temperature > 0 else 1.0

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        response: torch.Tensor,
        *,
        entropy: bool | str = False,
        values: bool = True,
        detach_values: bool = False,
        ptx: dict | None = None,
    ) -> PolicyOutput:
        """`input_ids`, `attention_mask` (B, P + N): left-padded prompt then right-padded response;
        `response` (B, N) the response ids (also the last N columns of `input_ids`).
        `entropy`: True computes it as a metric (no gradient), "grad" as a term of the loss.
        `detach_values`: the value head learns, but its loss does not reach the backbone.
        `ptx`: a PPO-ptx batch (input_ids, attention_mask, labels) whose summed LM loss is computed
        in the same call (one forward of the wrapped module per micro-batch, as DDP expects)."""
        from rlhf.models.readout import token_logprobs

        head = self.value_head if values else None
        # logits (B, N, V), hidden (B, N, H)
        logits, hidden = self._read(input_ids, attention_mask, response, head is not None)
        read = token_logprobs(logits, response, temperature=self.temperature, entropy=entropy)
        value = None
        if head is not None:
            feats = hidden.detach() if detach_values else hidden
            value = head(feats.to(head.weight.dtype)).squeeze(-1).float()  # (B, N)
        ptx_nll = None
        if ptx is not None:
            from rlhf.losses.lm import token_nll
            from rlhf.models.seq2seq import answer_nll

            inputs = {k: v for k, v in ptx.items() if k not in ("labels", "count")}
            ptx_logits = self.lm(**inputs, use_cache=False).logits
            seq2seq = "decoder_input_ids" in ptx
            ptx_nll = (answer_nll if seq2seq else token_nll)(ptx_logits, ptx["labels"])[0]
        return PolicyOutput(logprobs=read.logprobs, entropy=read.entropy, values=value, ptx_nll=ptx_nll)

    def _read(self, input_ids, attention_mask, response, hidden: bool):
        """(logits (B, N, V) that predict each response token, their hidden states (B, N, H) or
        None): one pass of the backbone, the LM head on the response's N positions only."""
        from rlhf.models.readout import causal_parts
        from rlhf.models.seq2seq import is_seq2seq, read_answers, right_align

        n = response.shape[1]
        if is_seq2seq(self.lm):
            pad_id = int(getattr(self.lm.config, "pad_token_id", None) or 0)
            prompt, prompt_mask = right_align(input_ids[:, :-n], attention_mask[:, :-n], pad_id)
            out = read_answers(
                self.lm, prompt, prompt_mask, response, attention_mask[:, -n:], pad_id=pad_id, hidden=hidden
            )
            return out.logits, out.hidden
        backbone, head = causal_parts(self.lm)
        position_ids = (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)  # (B, P + N)
        states = backbone(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        ).last_hidden_state  # (B, P + N, H)
        states = states[:, -n - 1 : -1]  # (B, N, H): the states that predict each response token
        return head(states), states


def critic_values(critic: nn.Module, input_ids, attention_mask, n: int) -> torch.Tensor:
    """(B, N) values of a separate critic (a `ScalarModel`) at the states before each response token:
    an encoder-decoder critic reads the prompt with its encoder and the response with its decoder."""
    from rlhf.models.seq2seq import is_seq2seq

    inner = getattr(critic, "module", critic)
    if is_seq2seq(inner.seq_model):
        return critic(input_ids=input_ids, attention_mask=attention_mask, answer_width=n).values
    return critic(input_ids=input_ids, attention_mask=attention_mask).values[:, -n - 1 : -1]


def read_head_weight(directory: str | Path) -> torch.Tensor:
    """The (1, hidden) scalar head of a saved reward/value model, read without loading the model:
    `rlhf_value_head.safetensors`, or the `score`/`classifier` weight of a one-label classifier."""
    from safetensors import safe_open

    directory = Path(directory).expanduser()
    head_file = directory / VALUE_HEAD_FILE
    if head_file.is_file():
        with safe_open(str(head_file), framework="pt") as f:
            return f.get_tensor("weight")
    for file in sorted(directory.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not iterable)
                if key.endswith(("score.weight", "classifier.weight")) and "modules_to_save" not in key:
                    return f.get_tensor(key)
    raise FileNotFoundError(f"no value head ({VALUE_HEAD_FILE}) or score/classifier weight in {directory}")
