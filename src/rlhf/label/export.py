"""Turn a project's judgments into files the reward and SFT stages read.

Formats (`rlhf data formats` describes each one the loaders read):

    pairs      {prompt, chosen, rejected, weight, ...}  pairwise answers, or rankings expanded to pairs
    rankings   {prompt, completions, ranks, weight, ...} rankings (Borda count over annotators), or
               decisive pairwise answers as two-completion rankings
    ratings    {prompt, completion, rating, ...}        one row per rated completion
    labels     {prompt, completion, label, ...}         one row per labelled completion
    sft        {prompt, completion, ...}                corrections when the project asks for them,
               else each item's winning completion
    judgments  every live submission, whole (feedback text included), for your own analysis

Several annotators per item are resolved in one of two ways:

    majority   one row per item (per completion for ratings and labels): the strict plurality of
               the verdicts, the Borda count of the rankings (mean place), the mean rating, the
               plurality label. Items without a majority are left out, and say so.
    all        every judgment is its own row, weighted 1 / (judgments of its item), so each item
               weighs 1 in total and disagreeing annotators cancel out (the reward stage reads `weight`).

Every row keeps the item id, the task file line it came from, the annotators and the times of
their submissions (UTC, ISO 8601), and its `feedback_source`: `people`, or the LLM judge
(`judge:<name>`, from `rlhf label judge`) whose verdicts it holds. People's and each judge's
judgments are resolved apart, so `rlhf reward` can weight or leave out each source
(`data.sources`). Items with fewer people's judgments than the project's overlap are left out
unless `include_incomplete` (a judge's verdict needs none). The report counts every item left out,
by reason.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rlhf.data.text import repair_text
from rlhf.files import write_jsonl_atomic
from rlhf.label.agreement import majority
from rlhf.label.quality import pairwise_value
from rlhf.label.queue import JUDGE_PREFIX, PEOPLE
from rlhf.label.store import Item, Store

FORMATS = ("pairs", "rankings", "ratings", "labels", "sft", "judgments")
RESOLVE = ("majority", "all")


class ExportError(ValueError):
    """An export the project's questions cannot give (e.g. ratings from a pairwise project)."""


@dataclass
class ExportReport:
    rows: int = 0
    items: int = 0
    """Items the project has."""
    used_items: int = 0
    """Items that gave at least one row."""
    left_out: Counter = field(default_factory=Counter)
    """Items (for ratings and labels: completions) left out, by reason."""
    repaired: int = 0
    """Texts written with U+FFFD for a lone surrogate: stored before the app refused them, they
    cannot be written as UTF-8 as they are."""

    def summary(self) -> str:
        text = f"{self.rows} rows from {self.used_items} of {self.items} items"
        if self.left_out:
            reasons = ", ".join(f"{n} {reason}" for reason, n in self.left_out.most_common())
            text += f"; left out: {reasons}"
        if self.repaired:
            text += (
                f"; {self.repaired} texts held a lone surrogate (stored by an older rlhf) and were "
                "written with U+FFFD in its place"
            )
        return text

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "items": self.items,
            "used_items": self.used_items,
            "left_out": dict(self.left_out),
            "repaired_texts": self.repaired,
        }


def export_rows(
    store: Store,
    fmt: str,
    resolve: str = "majority",
    *,
    include_incomplete: bool = False,
    sources: str | None = None,
) -> tuple[list[dict[str, Any]], ExportReport]:
    """The rows of one export format, and what was left out. `sources`: whose judgments to write —
    None (all), `people`, `judge` (every LLM judge) or one judge's `judge:<name>`; each row names its
    `feedback_source`. People's and each judge's judgments are resolved apart, and only people's
    count toward the overlap."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if resolve not in RESOLVE:
        raise ExportError(f"unknown resolution {resolve!r}; choose majority or all")
    by_source: dict[str, dict[int, list[dict[str, Any]]]] = {}
    for sub in store.submissions():
        if _wanted(sub["source"], sources):
            by_source.setdefault(sub["source"], {}).setdefault(sub["item_id"], []).append(sub)
    if sources not in (None, PEOPLE, "judge") and sources not in by_source:
        raise ExportError(f"no judgments from {sources!r} in this project")
    report = ExportReport(items=0)
    rows: list[dict[str, Any]] = []
    build = _builder(fmt, store.config.questions)
    used: set[int] = set()
    for item in store.items():
        report.items += 1
        for source in sorted(by_source, key=lambda name: name != PEOPLE):
            made = _item_rows(store, item, by_source[source].get(item.id, []), fmt, resolve, build,
                              report.left_out, include_incomplete, judge=source != PEOPLE)  # fmt: skip
            for row in made:
                row, repaired = repair_text({**row, "feedback_source": source})
                report.repaired += repaired
                rows.append(row)
                used.add(item.id)
        if not any(item.id in subs for subs in by_source.values()):
            report.left_out["without judgments"] += 1
    report.used_items = len(used)
    report.rows = len(rows)
    return rows, report


def _wanted(source: str, sources: str | None) -> bool:
    if sources is None or sources == source:
        return True
    return sources == "judge" and source.startswith(JUDGE_PREFIX)


def _item_rows(store, item, subs, fmt, resolve, build, left, include_incomplete, *, judge: bool) -> list:
    """One source's rows of one item (a judge's verdict needs no overlap; it answers only pairwise
    and ranking questions, so it gives no ratings, labels or SFT rows)."""
    if fmt == "judgments":
        return [_judgment_row(item, sub) for sub in subs]
    if not subs or (judge and fmt not in ("pairs", "rankings")):
        return []
    if not judge and len(subs) < store.config.overlap and not include_incomplete:
        left[f"incomplete (fewer than {store.config.overlap} judgments)"] += 1
        return []
    return build(item, subs, resolve, left)


def write_export(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Write rows as JSONL (UTF-8, one object per line), all at once: a failed write leaves no file
    (or the earlier one) rather than part of the rows."""
    return write_jsonl_atomic(path, rows, allow_nan=False)


# ---------------------------------------------------------------------- one builder per format


def _builder(fmt: str, questions: list[str]):
    need = {
        "pairs": ("pairwise", "ranking"),
        "rankings": ("ranking", "pairwise"),
        "ratings": ("rating",),
        "labels": ("label",),
        "sft": ("correction", "pairwise", "ranking", "rating"),
        "judgments": questions,
    }[fmt]
    source = next((q for q in need if q in questions), None)
    if source is None:
        raise ExportError(
            f"`{fmt}` needs one of the questions {', '.join(need)}; this project asks {', '.join(questions)}"
        )
    if fmt == "pairs":
        return _pairs_from_pairwise if source == "pairwise" else _pairs_from_ranking
    if fmt == "rankings":
        return _rankings_from_ranking if source == "ranking" else _rankings_from_pairwise
    if fmt in ("ratings", "labels"):
        return lambda item, subs, resolve, left: _pointwise(item, subs, resolve, left, source)
    if source == "correction":
        return _corrections
    return lambda item, subs, resolve, left: _winners(item, subs, resolve, left, source)


def _provenance(item: Item, subs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "item": item.id,
        "task_source": item.source,
        "annotators": [s["annotator"] for s in subs],
        "submitted": [_iso(s["created"]) for s in subs],
    }


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _pairs_from_pairwise(item, subs, resolve, left) -> list[dict[str, Any]]:
    values = [pairwise_value(s["answer"]["pairwise"]) for s in subs]
    if resolve == "all":
        out = []
        for sub, value in zip(subs, values):
            if isinstance(value, int):
                out.append(_pair(item, value, 1 - value, 1 / len(subs), _provenance(item, [sub])))
            else:
                left[f"judgments saying {value.replace('_', ' ')}"] += 1
        return out
    top, _ = majority(values)
    if top is None:
        left["no majority"] += 1
        return []
    if not isinstance(top, int):
        left[f"majority says {str(top).replace('_', ' ')}"] += 1
        return []
    row = _pair(item, top, 1 - top, 1.0, _provenance(item, subs))
    row["votes"] = {_vote_name(v): n for v, n in Counter(values).items()}
    return [row]


def _vote_name(value: int | str) -> str:
    return f"completion {value}" if isinstance(value, int) else value


def _pair(item: Item, better: int, worse: int, weight: float, extra: dict) -> dict[str, Any]:
    return {
        "prompt": item.prompt, "chosen": item.completions[better], "rejected": item.completions[worse],
        "weight": weight, **extra,
    }  # fmt: skip


def _borda(rankings: list[list[int]], n: int) -> list[float]:
    """Mean place (0 = best) of each completion over the rankings."""
    places = [0.0] * n
    for ranking in rankings:
        for place, index in enumerate(ranking):
            places[index] += place / len(rankings)
    return places


def _ranking_groups(item: Item, subs: list[dict[str, Any]], resolve: str):
    """(texts, places, submissions, weight) per row to write: the Borda count of all rankings
    (majority) or each ranking alone (all); repeated texts merged (`_merge_repeats`)."""
    rankings = [s["answer"]["ranking"] for s in subs]
    if resolve == "all":
        groups = [(_places(r), [s], 1 / len(subs)) for r, s in zip(rankings, subs)]
    else:
        groups = [(_borda(rankings, len(item.completions)), subs, 1.0)]
    for places, who, weight in groups:
        texts, merged = _merge_repeats(item.completions, places)
        yield texts, merged, who, weight


def _pairs_from_ranking(item, subs, resolve, left) -> list[dict[str, Any]]:
    out = []
    for texts, places, who, weight in _ranking_groups(item, subs, resolve):
        pairs = [(i, j) for i in range(len(places)) for j in range(len(places)) if places[i] < places[j]]
        for i, j in pairs:
            row = {
                "prompt": item.prompt,
                "chosen": texts[i],
                "rejected": texts[j],
                "weight": weight / len(pairs),
            }
            out.append({**row, **_provenance(item, who)})
    if not out:
        left["no decisive pair"] += 1
    return out


def _places(ranking: list[int]) -> list[float]:
    places = [0.0] * len(ranking)
    for place, index in enumerate(ranking):
        places[index] = float(place)
    return places


def _rankings_from_ranking(item, subs, resolve, left) -> list[dict[str, Any]]:
    out = []
    for texts, places, who, weight in _ranking_groups(item, subs, resolve):
        distinct = sorted(set(places))
        if len(distinct) == 1:
            left["all completions tied or identical"] += 1
            continue
        ranks = [distinct.index(p) + 1 for p in places]
        row = {
            "prompt": item.prompt,
            "completions": texts,
            "ranks": ranks,
            "weight": weight,
            **_provenance(item, who),
        }
        if resolve == "majority":
            row["mean_place"] = [round(p + 1, 6) for p in places]
        out.append(row)
    return out


def _merge_repeats(completions: list[str], places: list[float]) -> tuple[list[str], list[float]]:
    """Identical completion texts (a model can sample the same answer twice) as one completion at
    the mean of their places: a ranking cannot rank one text two ways."""
    seen: dict[str, list[float]] = {}
    for text, place in zip(completions, places):
        seen.setdefault(text, []).append(place)
    return list(seen), [sum(p) / len(p) for p in seen.values()]


def _rankings_from_pairwise(item, subs, resolve, left) -> list[dict[str, Any]]:
    """Decisive pairwise answers as two-completion rankings (ties and both-bad are left out)."""
    out = []
    for pair in _pairs_from_pairwise(item, subs, resolve, left):
        ranks = [1, 2] if pair["chosen"] == item.completions[0] else [2, 1]
        extra = {k: v for k, v in pair.items() if k not in ("prompt", "chosen", "rejected")}
        out.append({"prompt": item.prompt, "completions": item.completions, "ranks": ranks, **extra})
    return out


def _pointwise(item, subs, resolve, left, question: str) -> list[dict[str, Any]]:
    key = "rating" if question == "rating" else "label"
    out: list[dict[str, Any]] = []
    for index, completion in enumerate(item.completions):
        values = [s["answer"][question][index] for s in subs]
        if resolve == "all":
            out.extend(
                {
                    "prompt": item.prompt,
                    "completion": completion,
                    key: v,
                    "completion_index": index,
                    **_provenance(item, [s]),
                }  # fmt: skip
                for v, s in zip(values, subs)
            )
            continue
        if question == "rating":
            value = sum(values) / len(values)
        else:
            value, _ = majority(values)
            if value is None:
                left["completions without a majority label"] += 1
                continue
        row = {"prompt": item.prompt, "completion": completion, key: value, "completion_index": index}
        out.append({**row, "votes": values, **_provenance(item, subs)})
    return out


def _corrections(item, subs, resolve, left) -> list[dict[str, Any]]:
    seen, out = set(), []
    for sub in subs:
        fix = sub["answer"]["correction"]
        if fix["text"] in seen:
            continue
        seen.add(fix["text"])
        original = item.completions[fix["index"]]
        out.append(
            {
                "prompt": item.prompt,
                "completion": fix["text"],
                "original": original,
                "corrected_index": fix["index"],
                **_provenance(item, [sub]),
            }  # fmt: skip
        )
    return out


def _winners(item, subs, resolve, left, question: str) -> list[dict[str, Any]]:
    """Each item's best completion by the majority (pairwise), Borda count or mean rating."""
    if question == "pairwise":
        rows = _pairs_from_pairwise(item, subs, "majority", left)
        best = [item.completions.index(rows[0]["chosen"])] if rows else []
    else:
        if question == "ranking":
            scores = [-p for p in _borda([s["answer"]["ranking"] for s in subs], len(item.completions))]
        else:
            scores = [
                sum(s["answer"]["rating"][i] for s in subs) / len(subs) for i in range(len(item.completions))
            ]
        top = max(scores)
        best = [i for i, s in enumerate(scores) if s == top]
        if len(best) > 1:
            left["no single best completion"] += 1
            best = []
    return [
        {
            "prompt": item.prompt,
            "completion": item.completions[i],
            "completion_index": i,
            **_provenance(item, subs),
        }
        for i in best
    ]


def _judgment_row(item: Item, sub: dict[str, Any]) -> dict[str, Any]:
    return {
        "item": item.id, "task_source": item.source, "prompt": item.prompt, "completions": item.completions,
        "annotator": sub["annotator"], "submitted": _iso(sub["created"]), "seconds": sub["seconds"],
        "display_order": sub["order"], "answer": sub["answer"],
        **({"judge": item.meta["judge"].get(sub["source"])} if sub["source"] != PEOPLE else {}),
    }  # fmt: skip
