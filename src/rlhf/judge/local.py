"""A judge served by a local model (`judge.model`) through the rollout engines instead of an endpoint.

The question goes to the model as a user message (its chat template, or the project's fallback
template when it has none), is answered greedily by the engine (`hf`, or `vllm` when it can run the
model here), and cut to `max_tokens`; the first answer token's top-5 log-probabilities come from one
forward pass of the model over the question, so verdict probabilities read exactly as an endpoint's
`top_logprobs`. Answers are cached on disk like an endpoint's (`rlhf.judge.client`), keyed by the
model's path and the time its files last changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from rlhf.judge.cache import Reply, ReplyCache
from rlhf.judge.config import JudgeConfig

TOP = 5
"""Alternatives of the first answer token returned with each reply (as an endpoint's `top_logprobs`)."""
LONGEST_ANSWER = 128
"""Tokens the engine writes per question before the reply is cut to the asked `max_tokens`."""


class LocalClient:
    """`client.ask_many(texts, max_tokens) -> [Reply]` from a local model; `sent` counts questions
    the model answered (not the cache)."""

    def __init__(self, cfg: JudgeConfig) -> None:
        from rlhf.config.parts import ModelConfig
        from rlhf.data.records import Message
        from rlhf.data.tokenize import encode_prompt, render_prompt
        from rlhf.engines import make_generator, resolve_engine
        from rlhf.generation.config import SamplingConfig
        from rlhf.models.load import kind_of, load_lm, load_tokenizer

        assert cfg.model is not None
        self.cfg = cfg
        model_cfg = ModelConfig(path=cfg.model, dtype=cfg.dtype)
        self.tokenizer = load_tokenizer(model_cfg, padding_side="left")
        self.model = load_lm(model_cfg, for_training=False, tokenizer=self.tokenizer)
        self.seq2seq = kind_of(cfg.model) == "seq2seq"
        self.engine = resolve_engine(cfg.engine, model_cfg)
        longest = max(cfg.max_tokens, LONGEST_ANSWER)
        sampling = SamplingConfig(temperature=0.0, max_new_tokens=longest, seed=0)
        self.generator = make_generator(self.engine, self.tokenizer, sampling, cfg.vllm)
        self.generator.sync(self.model)
        self.encode = lambda text: encode_prompt(
            self.tokenizer, render_prompt((Message("user", text),), self.tokenizer)
        )
        self.cache = ReplyCache(cfg.cache)
        self.version = _version(cfg.model)
        self.sent = 0

    def ask(self, text: str, max_tokens: int | None = None) -> Reply:
        return self.ask_many([text], max_tokens)[0]

    def ask_many(self, texts: Sequence[str], max_tokens: int | None = None) -> list[Reply]:
        budget = max_tokens or self.cfg.max_tokens
        keys = [self.cache.key([f"local:{self.cfg.model}", self.version, text, budget]) for text in texts]
        found = {k: r for k in set(keys) if (r := self.cache.get(k)) is not None}
        todo: list[int] = []  # the first question of each key neither cached nor already asked
        for i, key in enumerate(keys):
            if key not in found and all(keys[j] != key for j in todo):
                todo.append(i)
        if todo:
            ids = [self.encode(texts[i]) for i in todo]
            samples = self.generator.generate(ids, desc="judge")
            tops = self._first_token_tops(ids)
            for i, sample, top in zip(todo, samples, tops):
                text = str(self.tokenizer.decode(sample.token_ids[:budget], skip_special_tokens=True))
                reply = Reply(text, top)
                self.cache.put(keys[i], reply)
                found[keys[i]] = reply
            self.sent += len(todo)
        return [found[k] if i in todo else _cached(found[k]) for i, k in enumerate(keys)]

    @torch.no_grad()
    def _first_token_tops(self, ids: list[list[int]]) -> list[list[dict[str, Any]]]:
        """Each question's top-`TOP` first answer tokens as [{token, logprob}] (one forward each)."""
        out = []
        for row in ids:
            inputs = torch.tensor([row], device=self.model.device)
            if self.seq2seq:
                start = self.model.config.decoder_start_token_id
                decoder = torch.tensor([[start]], device=self.model.device)
                logits = self.model(input_ids=inputs, decoder_input_ids=decoder).logits
            else:
                logits = self.model(input_ids=inputs).logits
            logprobs = torch.log_softmax(logits[0, -1].float(), dim=-1)
            values, tokens = logprobs.topk(TOP)
            out.append([{"token": self.tokenizer.decode([int(t)]), "logprob": float(v)}
                        for v, t in zip(values, tokens)])  # fmt: skip
        return out

    def close(self) -> None:
        self.generator.close()
        self.cache.close()


def _version(model: str) -> int:
    """When a local model directory's files last changed (0 for a hub id): part of the cache key, so
    a model saved again in place is asked afresh."""
    from pathlib import Path

    path = Path(model)
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else []
    return max((p.stat().st_mtime_ns for p in files), default=0)


def _cached(reply: Reply) -> Reply:
    return Reply(reply.text, reply.top_logprobs, cached=True)
