"""Normalizers for preference formats: pairwise comparisons (plain, chat, Anthropic HH, ShareGPT)
and rankings. OpenAssistant message trees live in `oasst.py`.
"""

from __future__ import annotations

import re
from typing import Any

from rlhf.data.errors import describe_value
from rlhf.data.fields import (
    NormalizeContext,
    RowView,
    check_message,
    check_number,
    check_text,
    prompt_messages,
)
from rlhf.data.records import Comparison, Message, Prompt, Ranking

HH_ASSISTANT = "\n\nAssistant:"
"""The marker before each assistant turn of an Anthropic HH transcript."""
_HH_TURN = re.compile(r"\n\n(Human|Assistant):")


def pairwise(row: RowView, ctx: NormalizeContext) -> list[Comparison]:
    """{prompt, chosen, rejected, margin?}; chosen/rejected may also be message lists that end with
    the assistant reply (the prompt then comes from `prompt` and/or the messages before that reply)."""
    if isinstance(row.row.get("chosen"), list) or isinstance(row.row.get("rejected"), list):
        prompt, chosen, rejected = _chat_pair(row)
    else:
        prompt = row.prompt("prompt")
        chosen, rejected = row.text("chosen"), row.text("rejected")
    check_differ(row, chosen, rejected)
    margin = row.optional_number("margin")
    weight = row_weight(row)
    return [Comparison(prompt, chosen, rejected, row.source, margin=margin, meta=row.meta(), weight=weight)]


def row_weight(row: RowView) -> float:
    """The row's optional `weight`: a positive number (1 when absent)."""
    weight = row.optional_number("weight")
    if weight is None:
        return 1.0
    if not weight > 0:
        raise row.fail("weight", f"must be a positive number, got {weight}")
    return float(weight)


def _chat_pair(row: RowView) -> tuple[Prompt, str, str]:
    """Prompt and the two replies of a chat preference row.

    Both lists must end with an assistant message and agree on every message before it. Those
    shared messages extend `prompt`; when they already start with `prompt` (datasets that repeat
    the prompt inside each conversation), they are the whole prompt.
    """
    chosen = row.messages("chosen")
    rejected = row.messages("rejected")
    for key, messages in (("chosen", chosen), ("rejected", rejected)):
        if messages[-1].role != "assistant":
            raise row.fail(
                key, f"the last message must be the assistant's reply, got a `{messages[-1].role}` message"
            )
    head = chosen[:-1]
    if rejected[:-1] != head:
        raise row.fail(
            "rejected",
            "differs from `chosen` before the final assistant reply; both must continue one conversation",
        )
    if not row.has("prompt"):
        if not head:
            raise row.fail(
                "prompt", "missing: `chosen` and `rejected` hold only the reply, so the prompt must be given"
            )
        return head, chosen[-1].content, rejected[-1].content
    given = row.prompt("prompt")
    if not head:
        prompt: Prompt = given
    else:
        given_messages = prompt_messages(given)
        prompt = head if head[: len(given_messages)] == given_messages else given_messages + head
    return prompt, chosen[-1].content, rejected[-1].content


def hh(row: RowView, ctx: NormalizeContext) -> list[Comparison]:
    """{chosen, rejected} as whole Anthropic HH transcripts ("\\n\\nHuman: ...\\n\\nAssistant: ...").

    The prompt is the raw text up to and including the last "\\n\\nAssistant:" (kept as text, so it
    renders exactly as the data was written; `hh_messages` parses it into turns); the replies are
    what follows, without one leading space.
    """
    transcripts = {key: row.text(key) for key in ("chosen", "rejected")}
    prompts, replies = {}, {}
    for key, transcript in transcripts.items():
        cut = transcript.rfind(HH_ASSISTANT)
        if cut < 0:
            raise row.fail(key, f'no "{HH_ASSISTANT}" turn; expected an Anthropic HH transcript')
        cut += len(HH_ASSISTANT)
        prompts[key], replies[key] = transcript[:cut], transcript[cut:].removeprefix(" ")
        if not replies[key].strip():
            raise row.fail(key, f'the reply after the last "{HH_ASSISTANT}" is empty')
    if prompts["chosen"] != prompts["rejected"]:
        raise row.fail(
            "rejected",
            f'does not share the prompt of `chosen` (the transcript up to the last "{HH_ASSISTANT}")',
        )
    check_differ(row, replies["chosen"], replies["rejected"])
    margin = row.optional_number("margin")
    return [
        Comparison(prompts["chosen"], replies["chosen"], replies["rejected"], row.source, margin, row.meta())
    ]


def hh_messages(transcript: str) -> tuple[Message, ...]:
    """The turns of an HH transcript or prompt as messages; an empty final `Assistant:` is dropped."""
    parts = _HH_TURN.split(transcript)
    messages = []
    # parts = [text before the first marker, role, text, role, text, ...]
    for speaker, content in zip(parts[1::2], parts[2::2]):
        role = "user" if speaker == "Human" else "assistant"
        if content.strip():
            messages.append(Message(role, content.strip()))
    return tuple(messages)


def sharegpt_pairwise(row: RowView, ctx: NormalizeContext) -> list[Comparison]:
    """{conversations: [{from, value}], chosen: {from, value}, rejected: {from, value}}."""
    prompt = row.messages("conversations", role_key="from", content_key="value")
    chosen, rejected = _sharegpt_reply(row, "chosen"), _sharegpt_reply(row, "rejected")
    check_differ(row, chosen, rejected)
    return [Comparison(prompt, chosen, rejected, row.source, meta=row.meta())]


def _sharegpt_reply(row: RowView, key: str) -> str:
    value = row.require(key)
    if not isinstance(value, dict):
        return check_text(value, key, row.source)
    message = check_message(value, key, row.source, role_key="from", content_key="value")
    if message.role != "assistant":
        raise row.fail(f"{key}.from", f"expected an assistant (`gpt`) reply, got a `{message.role}` message")
    return message.content


def check_differ(row: RowView, chosen: str, rejected: str) -> None:
    # A pair with two equal texts carries no preference and would teach a reward model nothing;
    # nor does one whose texts differ only in whitespace or characters no reader sees.
    from rlhf.data.text import seen_as

    if chosen == rejected:
        raise row.fail("rejected", "identical to `chosen`; a comparison needs two different completions")
    if seen_as(chosen) == seen_as(rejected):
        raise row.fail(
            "rejected",
            "reads the same as `chosen` (they differ only in whitespace, Unicode normalization or invisible "
            "characters); a comparison needs two different completions",
        )


def ranking(row: RowView, ctx: NormalizeContext) -> list[Ranking]:
    """{prompt, completions: [...], ranks: [...]}: one rank per completion, lower is better; or,
    without `ranks`, `scores: [...]`, higher is better (equal scores tie)."""
    prompt = row.prompt("prompt")
    completions = row.require("completions")
    if not isinstance(completions, list):
        raise row.fail("completions", f"expected a list of completions, got {describe_value(completions)}")
    texts = [check_text(item, f"completions[{i}]", row.source) for i, item in enumerate(completions)]
    key = "scores" if row.get("ranks") is None and row.get("scores") is not None else "ranks"
    values = row.require(key)
    if not isinstance(values, list):
        raise row.fail(key, f"expected a list of numbers, got {describe_value(values)}")
    ranks = [check_number(item, f"{key}[{i}]", row.source) for i, item in enumerate(values)]
    if key == "scores":
        order = sorted(set(ranks), reverse=True)
        ranks = [order.index(score) for score in ranks]  # 0: the highest score
    check_ranking(row, texts, ranks, ctx.allow_ties)
    weight = row_weight(row)
    return [Ranking(prompt, texts, ranks, row.source, meta=row.meta(), weight=weight)]


def check_ranking(
    row: RowView, texts: list[str], ranks: list[Any], allow_ties: bool, field: str = "completions"
) -> None:
    """Shared checks of a ranking: ≥2 completions, one rank each, ties only when allowed."""
    if len(texts) < 2:
        raise row.fail(field, f"expected at least 2 completions to rank, got {len(texts)}")
    if len(ranks) != len(texts):
        raise row.fail(
            "ranks", f"has {len(ranks)} ranks for {len(texts)} completions; give one rank per completion"
        )
    first_at: dict[Any, int] = {}
    for index, rank in enumerate(ranks):
        if rank in first_at and not allow_ties:
            raise row.fail(
                "ranks",
                f"duplicate rank {rank} (completions {first_at[rank]} and {index}); ties are not allowed "
                "(data.allow_ties: false)",
            )
        first_at.setdefault(rank, index)
    if len(first_at) == 1:
        raise row.fail(
            "ranks", f"all {len(ranks)} completions share rank {ranks[0]}, so the row orders nothing"
        )
    from rlhf.data.text import seen_as

    seen: dict[str, int] = {}
    for index, text in enumerate(texts):
        key = seen_as(text)  # what a reader sees: equal texts are one answer
        if key in seen and ranks[seen[key]] != ranks[index]:
            same = "identical to" if texts[seen[key]] == text else "reads the same as"
            raise row.fail(
                f"{field}[{index}]",
                f"{same} {field}[{seen[key]}] but ranked differently ({ranks[index]} vs {ranks[seen[key]]})",
            )
        seen.setdefault(key, index)
