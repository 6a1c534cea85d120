"""Normalizers for single-completion judgments: ratings, labels, corrections and free-text feedback."""

from __future__ import annotations

from rlhf.data.errors import DataError, describe_value
from rlhf.data.fields import NormalizeContext, RowView
from rlhf.data.records import Correction, Feedback, Label, Rating


def rating(row: RowView, ctx: NormalizeContext) -> list[Rating]:
    """{prompt, completion, rating}: a score inside `data.rating_scale` (inclusive)."""
    prompt, completion = row.prompt("prompt"), row.completion("completion")
    score = row.number("rating")
    if ctx.rating_scale is None:
        # The loader checks this before the first row; a direct caller gets the same message.
        raise row.fail("rating", RATING_SCALE_MISSING)
    low, high = ctx.rating_scale
    if not low <= score <= high:
        raise row.fail(
            "rating", f"{score:g} is outside the rating scale [{low:g}, {high:g}] (data.rating_scale)"
        )
    return [Rating(prompt, completion, float(score), row.source, meta=row.meta())]


RATING_SCALE_MISSING = "rating data needs its scale: set `data.rating_scale: [low, high]`"


def label(row: RowView, ctx: NormalizeContext) -> list[Label]:
    """{prompt, completion, label}: a category as text; booleans become `true`/`false`."""
    prompt, completion = row.prompt("prompt"), row.completion("completion")
    value = row.require("label")
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int):
        text = str(value)
    elif isinstance(value, str) and value.strip():
        text = value.strip()
    else:
        raise DataError.at(
            row.source,
            "label",
            f"expected a non-empty string, boolean or integer, got {describe_value(value)}",
        )
    return [Label(prompt, completion, text, row.source, meta=row.meta())]


def correction(row: RowView, ctx: NormalizeContext) -> list[Correction]:
    """{prompt, completion, correction}: the model's output and a person's improved version."""
    prompt, completion = row.prompt("prompt"), row.completion("completion")
    corrected = row.text("correction")
    return [Correction(prompt, completion, corrected, row.source, meta=row.meta())]


def feedback(row: RowView, ctx: NormalizeContext) -> list[Feedback]:
    """{prompt, completion, feedback}: a critique in words."""
    prompt, completion = row.prompt("prompt"), row.completion("completion")
    critique = row.text("feedback")
    return [Feedback(prompt, completion, critique, row.source, meta=row.meta())]
