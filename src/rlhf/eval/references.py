"""Reference metrics: how close each answer comes to a person's reference answer.

ROUGE-1, ROUGE-2 and ROUGE-L F1 (Lin, 2004) by Google's `rouge-score` package as summarization
papers report them: its tokenizer (lowercased, split on anything not a letter or digit) with Porter
stemming; with several references, the best one (per ROUGE type). Exact match: the answer equals a
reference after trimming and collapsing whitespace (case kept).

Where the references come from (`references_of`): the held-out rows themselves (a demonstration's
completion, a comparison's chosen answer, a ranking's best answers, a correction's corrected text,
or a `reference` field), a field named by `reference_field` (e.g. DialogSum's `summary`), or a
separate file (`references`) matched to the prompts by prompt text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rlhf.data.errors import DataError

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
REFERENCE_METRICS = (*ROUGE_TYPES, "exact_match")
"""The per-answer reference metrics, in the order they are reported."""
REFERENCE_FIELD = "reference"
"""A field of a prompt row read as its reference when no other is named."""


def normalize(text: str) -> str:
    """Trimmed, with every run of whitespace one space (what exact match compares)."""
    return " ".join(text.split())


def reference_scores(
    answers: Sequence[str], references: Sequence[Sequence[str] | None]
) -> dict[str, list[float | None]]:
    """metric -> (P,) the score of each answer against its references (None where it has none)."""
    from rouge_score import rouge_scorer

    if len(answers) != len(references):
        raise ValueError(f"{len(answers)} answers but {len(references)} reference lists")
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    out: dict[str, list[float | None]] = {name: [] for name in REFERENCE_METRICS}
    for answer, refs in zip(answers, references):
        if not refs:
            for values in out.values():
                values.append(None)
            continue
        best = scorer.score_multi(list(refs), answer)  # per type, the reference with the best F1
        for name in ROUGE_TYPES:
            out[name].append(best[name].fmeasure)
        out["exact_match"].append(float(any(normalize(answer) == normalize(r) for r in refs)))
    return out


def _prompt_key(prompt: Any) -> str:
    """A prompt (text or messages) as a hashable key."""
    from rlhf.data.jsonl import prompts_to_json

    value = prompts_to_json([prompt])[0]
    return value if isinstance(value, str) else repr(value)


def _as_texts(value: Any, where: Any, name: str) -> list[str]:
    """A field's value as a list of reference texts (a text, or a list of texts)."""
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise DataError(where.path, where.line, name, "a reference must be a text or a list of texts")
    return texts


def own_references(record: Any, reference_field: str | None = None) -> list[str] | None:
    """The references a held-out row carries itself (see the module docstring), or None."""
    if reference_field is not None:
        if reference_field not in record.meta:
            raise DataError(
                record.source.path,
                record.source.line,
                reference_field,
                "missing: `reference_field` names the field that holds every prompt's reference",
            )
        return _as_texts(record.meta[reference_field], record.source, reference_field)
    kind = record.kind
    if kind == "demonstration":
        return [record.completion]
    if kind == "comparison":
        return [record.chosen]
    if kind == "ranking":
        best = min(record.ranks)
        return [c for c, r in zip(record.completions, record.ranks) if r == best]
    if kind == "correction":
        return [record.correction]
    if REFERENCE_FIELD in record.meta:
        return _as_texts(record.meta[REFERENCE_FIELD], record.source, REFERENCE_FIELD)
    return None


def references_of(
    records: Sequence[Any], *, path: str | None = None, field: str | None = None
) -> list[list[str] | None]:
    """(P,) the references of each held-out row: from the file at `path` (any format with answers:
    each of its rows gives references to its prompt; every held-out prompt must find one), else
    from the rows themselves (`own_references`)."""
    if path is None:
        return [own_references(record, field) for record in records]
    from rlhf.data import load_records

    by_prompt: dict[str, list[str]] = {}
    for row in load_records(path).records:
        refs = own_references(row, field)
        if refs:
            by_prompt.setdefault(_prompt_key(row.prompt), []).extend(refs)
    out: list[list[str] | None] = []
    for record in records:
        refs = by_prompt.get(_prompt_key(record.prompt))
        if refs is None:
            raise DataError(
                record.source.path, record.source.line, "prompt", f"no reference for this prompt in {path}"
            )
        out.append(refs)
    return out
