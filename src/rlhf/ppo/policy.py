"""The actor (and, with a shared critic, the value head) as one module, read out at the response.

A rollout sequence is laid out as the generator produced it: the prompt left padded to the batch's
width P, then the response right padded to width N. Column P-1+t predicts response token t, so one
backbone pass gives, at those N columns, the hidden states that feed both the LM head (log-prob
of each action, entropy) and the value head (V(s_t), the state before action t). The LM head runs
only on those N columns: the prompt's logits over the vocabulary are never formed.

`PolicyValue` is what Accelerate wraps (DDP hooks see its `forward`); the reference model is the
same module with the adapter switched off (LoRA), or a frozen copy (full fine-tuning).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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


def causal_parts(lm: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(backbone, output head) of a causal LM or a PeftModel around one (LoRA layers live inside
    the backbone's modules, so calling the backbone directly still uses them)."""
    from rlhf.models.adapters import find_peft_model

    peft_model = find_peft_model(lm)
    base = peft_model.get_base_model() if peft_model is not None else lm
    return getattr(base, base.base_model_prefix), base.get_output_embeddings()


def disable_dropout(model: nn.Module) -> None:
    """Set every dropout probability to 0: the rollout's log-probs and the update's must come from
    the same function, or the first ratio is already off 1 (standard practice in RLHF)."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    config = getattr(model, "config", None)
    for name in ("attention_dropout", "hidden_dropout", "dropout"):
        if config is not None and isinstance(getattr(config, name, None), float):
            setattr(config, name, 0.0)


class PolicyValue(nn.Module):
    """A causal LM, optionally with a value head Linear(hidden, 1) on its last hidden states."""

    def __init__(self, lm: nn.Module, *, value_head: bool, temperature: float = 1.0) -> None:
        super().__init__()
        self.lm = lm
        hidden = (
            lm.config.hidden_size
            if hasattr(lm.config, "hidden_size")
            else lm.get_input_embeddings().weight.shape[1]
        )
        self.value_head = nn.Linear(hidden, 1, bias=False) if value_head else None
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
        backbone, head = causal_parts(self.lm)
        n = response.shape[1]
        position_ids = (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)  # (B, P + N)
        hidden = backbone(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        ).last_hidden_state  # (B, P + N, H)
        hidden = hidden[:, -n - 1 : -1]  # (B, N, H): the states that predict each response token
        logits = head(hidden).float()  # (B, N, V)
        if self.temperature != 1.0:
            logits = logits / self.temperature
        # log π(a) = logit(a) - logsumexp(logits): no (B, N, V) log-softmax is kept for backward.
        lse = torch.logsumexp(logits, dim=-1)  # (B, N)
        logprobs = logits.gather(-1, response.unsqueeze(-1)).squeeze(-1) - lse  # (B, N)
        ent = None
        if entropy:
            # Differentiable only when it is part of the loss; as a metric it costs no graph.
            with torch.set_grad_enabled(entropy == "grad" and torch.is_grad_enabled()):
                probs = torch.softmax(logits, dim=-1)
                ent = lse - (probs * logits).sum(-1)  # (B, N): H = logsumexp(z) - sum p z
        value = None
        if values and self.value_head is not None:
            feats = hidden.detach() if detach_values else hidden
            value = self.value_head(feats.to(self.value_head.weight.dtype)).squeeze(-1).float()  # (B, N)
        ptx_nll = None
        if ptx is not None:
            from rlhf.losses.lm import token_nll

            logits = self.lm(
                input_ids=ptx["input_ids"], attention_mask=ptx["attention_mask"], use_cache=False
            ).logits
            ptx_nll = token_nll(logits, ptx["labels"])[0]
        return PolicyOutput(logprobs=logprobs, entropy=ent, values=value, ptx_nll=ptx_nll)


def critic_values(critic: nn.Module, input_ids, attention_mask, n: int) -> torch.Tensor:
    """(B, N) values of a separate critic (a `ScalarModel`) at the states before each response token."""
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
