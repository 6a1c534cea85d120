"""Normalizer for OpenAssistant message trees (the `oasst` format).

A row is `{message_tree_id, tree_state, prompt: {message}}`, or a bare root message. Each
message has `text`, `role` (`prompter` or `assistant`), `replies` (its children) and, when people
ranked it against its siblings, an integer `rank` (0 = best).

Every group of at least two ranked siblings, at any depth, becomes one `Ranking`: the prompt is
the conversation from the root down to their parent, the completions are the siblings' texts.
What cannot be part of a ranking is counted in the load report, never dropped silently:
unranked replies next to ranked siblings, a lone ranked reply, and deleted messages (with the
replies under them).
"""

from __future__ import annotations

from typing import Any

from rlhf.data.errors import describe_value
from rlhf.data.fields import NormalizeContext, RowView, check_number, check_role, check_text
from rlhf.data.preferences import check_ranking
from rlhf.data.records import Message, Ranking

LEFT_OUT_UNRANKED = "unranked replies next to ranked siblings (oasst)"
LEFT_OUT_LONE = "ranked replies without a ranked sibling (oasst)"
LEFT_OUT_DELETED = "deleted messages, with their replies (oasst)"


def oasst(row: RowView, ctx: NormalizeContext) -> list[Ranking]:
    """All ranked sibling groups of one message tree, in depth-first order."""
    if "replies" in row.row and "prompt" not in row.row:
        root, field = row.row, ""  # a bare root message
        row.used.update(row.row)
        meta: dict[str, Any] = {
            key: row.row[key] for key in ("message_tree_id", "message_id") if key in row.row
        }
    else:
        root, field = row.require("prompt"), "prompt"
        if not isinstance(root, dict):
            raise row.fail("prompt", f"expected the root message object, got {describe_value(root)}")
        meta = row.meta()
    rankings: list[Ranking] = []
    _walk(row, ctx, root, field, (), meta, rankings)
    return rankings


def _walk(
    row: RowView,
    ctx: NormalizeContext,
    message: dict[str, Any],
    field: str,
    history: tuple[Message, ...],
    meta: dict[str, Any],
    out: list[Ranking],
) -> None:
    """Add the rankings of `message`'s replies, then of everything below them."""
    conversation = history + (_message(row, message, field),)
    replies = _replies(row, message, field)
    kept = []
    for index, reply in enumerate(replies):
        if not isinstance(reply, dict):
            raise row.fail(
                f"{_join(field, 'replies')}[{index}]",
                f"expected a message object, got {describe_value(reply)}",
            )
        if reply.get("deleted"):
            ctx.report.leave_out(LEFT_OUT_DELETED, 1 + _count_below(reply))
        else:
            kept.append((index, reply))
    ranked = [(index, reply) for index, reply in kept if reply.get("rank") is not None]
    if len(ranked) >= 2:
        out.append(_ranking(row, ctx, field, conversation, message, ranked, meta))
        ctx.report.leave_out(LEFT_OUT_UNRANKED, len(kept) - len(ranked))
    elif ranked:
        ctx.report.leave_out(LEFT_OUT_LONE, 1)
    for index, reply in kept:
        _walk(row, ctx, reply, f"{_join(field, 'replies')}[{index}]", conversation, meta, out)


def _ranking(
    row: RowView,
    ctx: NormalizeContext,
    field: str,
    conversation: tuple[Message, ...],
    parent: dict[str, Any],
    ranked: list[tuple[int, dict[str, Any]]],
    meta: dict[str, Any],
) -> Ranking:
    base = _join(field, "replies")
    texts = [check_text(reply.get("text"), f"{base}[{i}].text", row.source) for i, reply in ranked]
    ranks = [check_number(reply["rank"], f"{base}[{i}].rank", row.source) for i, reply in ranked]
    check_ranking(row, texts, ranks, ctx.allow_ties, field=base)
    first_role = check_role(ranked[0][1].get("role"), f"{base}[{ranked[0][0]}].role", row.source)
    extra = {
        "parent_id": parent.get("message_id"),
        "message_ids": [reply.get("message_id") for _, reply in ranked],
        # Prompter replies are ranked too in OpenAssistant; stages that want only assistant
        # completions can filter on this.
        "completion_role": first_role,
    }
    return Ranking(conversation, texts, ranks, row.source, meta={**meta, **extra})


def _message(row: RowView, message: dict[str, Any], field: str) -> Message:
    role = check_role(message.get("role"), _join(field, "role"), row.source)
    return Message(role, check_text(message.get("text"), _join(field, "text"), row.source))


def _replies(row: RowView, message: dict[str, Any], field: str) -> list[Any]:
    replies = message.get("replies")
    if replies is None:
        return []
    if not isinstance(replies, list):
        raise row.fail(_join(field, "replies"), f"expected a list of messages, got {describe_value(replies)}")
    return replies


def _count_below(message: dict[str, Any]) -> int:
    replies = message.get("replies") or []
    return sum(1 + _count_below(reply) for reply in replies if isinstance(reply, dict))


def _join(field: str, key: str) -> str:
    return f"{field}.{key}" if field else key
