"""Normalizers for demonstration formats (SFT data) and bare prompts.

Each takes a `RowView` and the load's `NormalizeContext` and returns the row's records, or
raises a `DataError` naming the field that does not fit.
"""

from __future__ import annotations

from rlhf.data.fields import NormalizeContext, RowView
from rlhf.data.records import Demonstration, Message, PromptOnly


def prompt_completion(row: RowView, ctx: NormalizeContext) -> list[Demonstration]:
    """{prompt, completion}: prompt as text or messages, completion as text or one assistant message."""
    prompt = row.prompt("prompt")
    completion = row.completion("completion")
    return [Demonstration(prompt, completion, row.source, meta=row.meta())]


def chat(row: RowView, ctx: NormalizeContext) -> list[Demonstration]:
    """{messages: [{role, content}]}: the final assistant message is the completion."""
    messages = row.messages("messages")
    return [_split_conversation(row, "messages", messages)]


def sharegpt(row: RowView, ctx: NormalizeContext) -> list[Demonstration]:
    """{conversations: [{from, value}]}: ShareGPT spelling of `chat` (human/gpt/system)."""
    messages = row.messages("conversations", role_key="from", content_key="value")
    return [_split_conversation(row, "conversations", messages)]


def _split_conversation(row: RowView, field: str, messages: tuple[Message, ...]) -> Demonstration:
    """The conversation's last (assistant) turn as completion, the turns before it as prompt."""
    last = messages[-1]
    if last.role != "assistant":
        raise row.fail(
            field,
            f"the last message must be the assistant's reply (the completion to learn), got a `{last.role}` message",
        )
    if len(messages) < 2:
        raise row.fail(field, "needs at least one message before the final assistant reply")
    return Demonstration(messages[:-1], last.content, row.source, meta=row.meta())


def alpaca(row: RowView, ctx: NormalizeContext) -> list[Demonstration]:
    """{instruction, input, output}: prompt = instruction, plus a blank line and the input if any."""
    instruction = row.text("instruction")
    extra = row.optional_text("input")
    output = row.text("output")
    prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    meta = {"instruction": instruction, "input": extra, **row.meta()}
    return [Demonstration(prompt, output, row.source, meta=meta)]


def text(row: RowView, ctx: NormalizeContext) -> list[Demonstration]:
    """{text}: plain text, learned whole (prompt "", `plain_text` set)."""
    return [Demonstration("", row.text("text"), row.source, plain_text=True, meta=row.meta())]


def prompts(row: RowView, ctx: NormalizeContext) -> list[PromptOnly]:
    """{prompt}: a prompt with no completion, for RL rollouts."""
    return [PromptOnly(row.prompt("prompt"), row.source, meta=row.meta())]
