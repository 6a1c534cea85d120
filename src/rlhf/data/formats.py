"""The registry of data formats and detection of a file's format from its first row.

Detection looks only at which fields the first row has (`data.format` skips it); every later
row must then fit that format, or its normalizer raises a `DataError` naming the field. The
checks run from the most specific field set to the least, so a row can match only one way:
message trees, then pairs (chosen+rejected), rankings (ranks, or scores), unjudged candidates (prompt+completions
without ranks), single-completion judgments (rating, label, correction, feedback),
prompt+completion, chat, ShareGPT, Alpaca, plain text, and finally bare prompts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rlhf.data import candidates, demonstrations, judgments, oasst, preferences, public
from rlhf.data.errors import DataError
from rlhf.data.fields import NormalizeContext, RowView
from rlhf.data.records import Record, Source


@dataclass(frozen=True)
class FormatSpec:
    """One data format: how its rows look and how they become records."""

    name: str
    """The id used in `data.format` and printed by `rlhf data formats`."""
    kind: str
    """Kind of the records it produces (see `records.KINDS`)."""
    fields: str
    """The row's fields, `?` marking optional ones."""
    description: str
    """One line on what the format is and where it comes from."""
    normalize: Callable[[RowView, NormalizeContext], Sequence[Record]]
    """Row -> records; raises DataError naming the field that does not fit."""
    scale: Callable[[str | None], tuple[float, float]] | None = None
    """A rating format's own scale (a published dataset's) given `data.attribute`, so
    `data.rating_scale` is not needed; raises ValueError for an attribute it lacks."""
    understood: tuple[str, ...] = ()
    """Judgment-like fields its rows often carry that say nothing the records lack (a pair's own
    scores: the pair already says which is better), so leaving them unread loses nothing."""
    published: bool = False
    """A published dataset's schema (`public.py`): its fields not read are its own, not another
    kind's judgments that a generic format would lose."""


_SPECS = (
    FormatSpec("prompt_completion", "demonstration", "{prompt, completion}",
               "prompt (text or messages) and the completion to learn", demonstrations.prompt_completion),
    FormatSpec("chat", "demonstration", "{messages: [{role, content}]}",
               "a conversation; the final assistant message is the completion", demonstrations.chat),
    FormatSpec("alpaca", "demonstration", "{instruction, input?, output}",
               "Stanford Alpaca instructions; prompt = instruction + blank line + input", demonstrations.alpaca),
    FormatSpec("sharegpt", "demonstration", "{conversations: [{from, value}]}",
               "ShareGPT conversations (human/gpt/system); the final gpt turn is the completion",
               demonstrations.sharegpt),
    FormatSpec("text", "demonstration", "{text}", "plain text, learned whole (no prompt)", demonstrations.text),
    FormatSpec("pairwise", "comparison", "{prompt, chosen, rejected, margin?, weight?}",
               "a preferred and a rejected completion; chosen/rejected may be message lists; weight: how much the row counts",
               preferences.pairwise, understood=("score_chosen", "score_rejected")),
    FormatSpec("hh", "comparison", "{chosen, rejected}",
               "Anthropic HH: two whole Human/Assistant transcripts that differ in the last reply",
               preferences.hh),
    FormatSpec("sharegpt_pairwise", "comparison", "{conversations, chosen: {from, value}, rejected: {from, value}}",
               "ShareGPT conversation with a preferred and a rejected gpt reply", preferences.sharegpt_pairwise),
    FormatSpec("ranking", "ranking", "{prompt, completions: [...], ranks | scores: [...], weight?}",
               "several completions with one rank each (lower is better, ties allowed), or one score each "
               "(higher is better); weight: how much the row counts", preferences.ranking,
               understood=("scores",)),
    FormatSpec("oasst", "ranking", "{message_tree_id, tree_state, prompt: {text, role, replies, rank?}}",
               "OpenAssistant message trees; each group of ranked sibling replies is one ranking", oasst.oasst),
    FormatSpec("candidates", "candidates", "{prompt, completions: [...], rendered_prompt?}",
               "completions to compare, not judged yet (no ranks); what `rlhf generate` writes",
               candidates.candidates),
    FormatSpec("rating", "rating", "{prompt, completion, rating}",
               "a completion scored on the scale set in `data.rating_scale`", judgments.rating),
    FormatSpec("label", "label", "{prompt, completion, label}",
               "a completion with a category (e.g. good/bad, true/false)", judgments.label),
    FormatSpec("correction", "correction", "{prompt, completion, correction}",
               "a completion and a person's corrected version", judgments.correction),
    FormatSpec("feedback", "feedback", "{prompt, completion, feedback}",
               "a completion with a critique in words", judgments.feedback),
    FormatSpec("summarize_feedback", "comparison", "{info: {post|article, title?, subreddit?}, summaries: [{text}, {text}], choice}",
               "OpenAI summarize-from-feedback comparisons; the prompt is the post with TL;DR:", public.summarize_comparisons, published=True),
    FormatSpec("shp", "comparison", "{history, human_ref_A, human_ref_B, labels, score_A?, score_B?}",
               "Stanford SHP; labels 1: A preferred", public.shp, published=True),
    FormatSpec("stack_exchange_paired", "comparison", "{question, response_j, response_k}",
               "StackExchange-paired; response_j preferred", public.stack_exchange_paired, published=True),
    FormatSpec("pku_saferlhf", "comparison", "{prompt, response_0, response_1, better_response_id, safer_response_id}",
               "PKU-SafeRLHF; data.attribute better (default) or safer", public.pku_saferlhf, published=True),
    FormatSpec("pku_saferlhf_labels", "label", "{prompt, response_0, response_1, is_response_0_safe, is_response_1_safe}",
               "PKU-SafeRLHF's safety flags as safe/unsafe labels (set data.format; not detected)",
               public.pku_saferlhf_labels, published=True),
    FormatSpec("nectar", "ranking", "{prompt, answers: [{answer, model, rank}]}",
               "Nectar K-way rankings (rank 1 best)", public.nectar, published=True),
    FormatSpec("helpsteer", "rating", "{prompt, response, helpfulness, correctness, coherence, complexity, verbosity}",
               "HelpSteer2/3, 0-4 each; data.attribute picks one (default helpfulness) or weighs several",
               public.helpsteer, scale=public.helpsteer_scale, published=True),
    FormatSpec("ultrafeedback", "ranking", "{instruction, completions: [{response, overall_score, annotations}]}",
               "UltraFeedback raw, ranked by data.attribute (default overall_score)", public.ultrafeedback, published=True),
    FormatSpec("ultrafeedback_ratings", "rating", "{instruction, completions: [{response, overall_score, annotations}]}",
               "UltraFeedback raw, each completion rated by data.attribute (set data.format; not detected)",
               public.ultrafeedback_ratings, scale=public.ultrafeedback_scale, published=True),
    FormatSpec("prompts", "prompt", "{prompt}", "prompts only, for RL rollouts", demonstrations.prompts),
)  # fmt: skip

FORMATS: dict[str, FormatSpec] = {spec.name: spec for spec in _SPECS}
"""Every format by id, in the order `rlhf data formats` lists them."""

_JUDGMENT_FIELDS = ("rating", "label", "correction", "feedback")
_PUBLIC_SCHEMAS = (
    ("summarize_feedback", {"info", "summaries", "choice"}),
    ("shp", {"history", "human_ref_A", "human_ref_B", "labels"}),
    ("stack_exchange_paired", {"question", "response_j", "response_k"}),
    ("pku_saferlhf", {"prompt", "response_0", "response_1"}),
    ("nectar", {"prompt", "answers"}),
    ("helpsteer", {"prompt", "response", "helpfulness"}),
    ("ultrafeedback", {"instruction", "completions"}),
)
"""The fields that identify a public dataset's schema (see `public.py`)."""


def detect_format(row: dict[str, Any], source: Source) -> str:
    """The format id that the fields of `row` (a dataset's first row) identify."""
    keys = {key for key, value in row.items() if value is not None}
    if _is_message_tree(row, keys):
        return "oasst"
    for name, needed in _PUBLIC_SCHEMAS:  # published datasets, by the fields only they have
        if needed <= keys:
            return name
    if {"chosen", "rejected"} <= keys:
        if "conversations" in keys:
            return "sharegpt_pairwise"
        if "prompt" in keys or isinstance(row["chosen"], list):
            return "pairwise"
        return "hh"
    if {"completions", "ranks"} <= keys or {"prompt", "completions", "scores"} <= keys:
        return "ranking"
    if {"prompt", "completions"} <= keys:
        return "candidates"
    if {"prompt", "completion"} <= keys:
        return next((name for name in _JUDGMENT_FIELDS if name in keys), "prompt_completion")
    for name, needed in (("chat", {"messages"}), ("sharegpt", {"conversations"}),
                         ("alpaca", {"instruction", "output"}), ("text", {"text"}), ("prompts", {"prompt"})):  # fmt: skip
        if needed <= keys:
            return name
    present = ", ".join(sorted(keys)) or "none"
    raise DataError.at(
        source,
        None,
        f"cannot tell the data format from the fields ({present}); set `data.format` "
        f"(`rlhf data formats` lists them){misspelled_fields(row)}",
    )


KNOWN_FIELDS = (
    "prompt", "completion", "chosen", "rejected", "completions", "ranks", "scores", "messages", "conversations",
    "instruction", "input", "output", "text", "rating", "label", "correction", "feedback", "margin", "weight",
    "system", "message_tree_id",
)  # fmt: skip
"""The top-level fields the formats read (the rest of a row is kept as metadata)."""


def misspelled_fields(row: dict[str, Any]) -> str:
    """`; did you mean ...?` naming the known fields that `row`'s unknown ones look like misspelled
    (`completon` -> `completion`), or "" when none does."""
    import difflib

    guesses = []
    for key in row:
        if key in KNOWN_FIELDS:
            continue
        close = difflib.get_close_matches(key, KNOWN_FIELDS, n=1, cutoff=0.8)
        if close:
            guesses.append(f"`{close[0]}` for `{key}`")
    return f"; did you mean {', '.join(guesses)}?" if guesses else ""


def _is_message_tree(row: dict[str, Any], keys: set[str]) -> bool:
    wrapped = "message_tree_id" in keys and isinstance(row.get("prompt"), dict)
    bare = {"text", "role", "replies"} <= keys
    return wrapped or bare


def resolve_format(name: str, first_row: dict[str, Any], source: Source) -> FormatSpec:
    """The spec for `data.format` (`auto`: detected from `first_row`)."""
    if name == "auto":
        return FORMATS[detect_format(first_row, source)]
    if name not in FORMATS:
        known = ", ".join(FORMATS)
        raise DataError(
            source.path, None, None, f"unknown `data.format` {name!r}; known formats: auto, {known}"
        )
    return FORMATS[name]


def format_table() -> str:
    """The formats as aligned text lines: id, record kind, fields, description."""
    width = max(map(len, FORMATS))
    kind_width = max(len(spec.kind) for spec in FORMATS.values())
    lines = []
    for spec in FORMATS.values():
        lines.append(f"{spec.name:<{width}}  {spec.kind:<{kind_width}}  {spec.fields}")
        lines.append(f"{'':<{width}}  {'':<{kind_width}}  {spec.description}")
    return "\n".join(lines)
