"""Normalizer for `candidates`: completions of one prompt waiting for people to judge them.

    {"prompt": "Name a fruit.", "completions": ["An apple.", "A rock."], "rendered_prompt": "..."}

`rlhf generate` writes this format (one row per prompt, its K samples in draw order) and the
labeling app reads it. It is a `ranking` row before anyone ranked it, so a row that has `ranks`
is read as `ranking` instead (see `formats.detect_format`).
"""

from __future__ import annotations

from rlhf.data.errors import describe_value
from rlhf.data.fields import NormalizeContext, RowView, check_storable
from rlhf.data.records import Candidates


def candidates(row: RowView, ctx: NormalizeContext) -> list[Candidates]:
    """{prompt, completions: [str, ...], rendered_prompt?}: at least one completion, each a string.

    Completions may repeat and may be empty: both are real model outputs, and the people judging
    them should see them. `rendered_prompt` (the text the model was given) stays in `meta`.
    """
    prompt = row.prompt("prompt")
    completions = row.require("completions")
    if not isinstance(completions, list) or not completions:
        raise row.fail(
            "completions", f"expected a non-empty list of strings, got {describe_value(completions)}"
        )
    for index, item in enumerate(completions):
        if not isinstance(item, str):
            raise row.fail(f"completions[{index}]", f"expected a string, got {describe_value(item)}")
        check_storable(item, f"completions[{index}]", row.source)
    rendered = row.row.get("rendered_prompt")
    if rendered is not None and not isinstance(rendered, str):
        raise row.fail("rendered_prompt", f"expected a string, got {describe_value(rendered)}")
    if rendered is not None:
        check_storable(rendered, "rendered_prompt", row.source)
    return [Candidates(prompt, list(completions), row.source, meta=row.meta())]
