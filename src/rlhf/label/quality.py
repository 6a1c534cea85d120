"""What the owner page and `rlhf label stats` show: progress, agreement per question, and each
annotator's pace, agreement with the others and score on gold items.

Agreement is measured per question on the unit annotators judged:

    pairwise  the item; the value is the original index of the better completion, or tie/both_bad
    ranking   each completion of an item; the value is its place in the ranking (0 = best), ordinal
    rating    each completion of an item; the score, interval
    label     each completion of an item; the label, nominal

Free text (correction, feedback) is counted but not scored. All of this is people's; LLM judges'
verdicts are measured apart, against people (`rlhf.label.judges`). Everything here is plain data (JSON).
"""

from __future__ import annotations

import statistics
from collections.abc import Hashable
from typing import Any

from rlhf.label.agreement import (
    Level,
    annotator_report,
    cohen_kappa,
    fleiss_kappa,
    krippendorff_alpha,
    raw_agreement,
    units_from_judgments,
)
from rlhf.label.judges import judge_stats
from rlhf.label.queue import JUDGE_PREFIX, PEOPLE
from rlhf.label.store import Store

LEVELS: dict[str, Level] = {
    "pairwise": "nominal",
    "ranking": "ordinal",
    "rating": "interval",
    "label": "nominal",
}
"""The level of measurement of each scored question (Krippendorff's alpha)."""


def judgments(question: str, submissions: list[dict[str, Any]]) -> list[tuple[str, Hashable, Any]]:
    """(annotator, unit, value) triples of one question (see the module docstring for units)."""
    out: list[tuple[str, Hashable, Any]] = []
    for sub in submissions:
        answer, who, item = sub["answer"].get(question), sub["annotator"], sub["item_id"]
        if answer is None:
            continue
        if question == "pairwise":
            out.append((who, item, pairwise_value(answer)))
        elif question == "ranking":
            out.extend((who, (item, index), place) for place, index in enumerate(answer))
        elif question in ("rating", "label"):
            out.extend((who, (item, index), value) for index, value in enumerate(answer))
    return out


def pairwise_value(answer: dict[str, Any]) -> int | str:
    """A pairwise answer as one category: the better completion's original index, or the verdict."""
    return answer["better"] if answer["better"] is not None else answer["verdict"]


def agreement(question: str, triples: list[tuple[str, Hashable, Any]]) -> dict[str, Any]:
    """Raw agreement, Krippendorff's alpha at the question's level, Fleiss' kappa (nominal
    questions) and Cohen's kappa (when exactly two annotators answered it); None = undefined."""
    units = units_from_judgments(triples)
    annotators = sorted({who for who, _, _ in triples})
    level = LEVELS[question]
    out: dict[str, Any] = {
        "units": len(units),
        "units_with_two_or_more": sum(len(v) >= 2 for v in units.values()),
        "annotators": len(annotators),
        "raw_agreement": raw_agreement(units),
        "krippendorff_alpha": krippendorff_alpha(units, level),
        "level": level,
        "fleiss_kappa": fleiss_kappa(units) if level == "nominal" else None,
        "cohen_kappa": None,
    }
    if len(annotators) == 2 and level == "nominal":
        first = {unit: value for who, unit, value in triples if who == annotators[0]}
        second = {unit: value for who, unit, value in triples if who == annotators[1]}
        shared = [unit for unit in first if unit in second]
        if shared:
            out["cohen_kappa"] = cohen_kappa([first[u] for u in shared], [second[u] for u in shared])
    return out


def gold_score(question: str, given: Any, gold: Any) -> bool:
    """Whether an answer matches the gold answer of one question."""
    if question == "pairwise":  # the verdict's letter is a display position: compare what it means
        return pairwise_value(given) == pairwise_value(gold)
    return given == gold


def project_stats(store: Store) -> dict[str, Any]:
    """Everything the owner page shows, as JSON-ready data."""
    cfg = store.config
    everything = list(store.submissions())
    submissions = [s for s in everything if s["source"] == PEOPLE]  # judges are measured apart
    items = {item.id: item for item in store.items()}
    per_item: dict[int, int] = {}
    for sub in submissions:
        per_item[sub["item_id"]] = per_item.get(sub["item_id"], 0) + 1
    progress = store.progress()
    progress["complete_items"] = sum(1 for n in per_item.values() if n >= cfg.overlap)
    progress["started_items"] = len(per_item)
    progress["gold_items"] = sum(1 for item in items.values() if item.gold)
    progress["judge_verdicts"] = len(everything) - len(submissions)

    questions = {}
    for question in cfg.questions:
        if question in LEVELS:
            triples = judgments(question, submissions)
            questions[question] = agreement(question, triples)
        else:
            count = sum(1 for sub in submissions if question in sub["answer"])
            questions[question] = {"answers": count, "level": "free text (not scored)"}
    if "pairwise" in cfg.questions:
        questions["pairwise"]["position_bias"] = position_bias(submissions)

    annotators = annotator_stats(store, submissions, items)
    return {
        "config": _public_config(store),
        "progress": progress,
        "questions": questions,
        "annotators": annotators,
        "judges": judge_stats(store, everything, items),
    }


def position_bias(submissions: list[dict[str, Any]]) -> dict[str, Any]:
    """Among decisive pairwise answers, how often the completion shown first (A) won; 0.5 = none."""
    decisive = [s for s in submissions if s["answer"].get("pairwise", {}).get("better") is not None]
    first = sum(1 for s in decisive if s["answer"]["pairwise"]["better"] == s["order"][0])
    return {"decisive": len(decisive), "shown_first_won": first / len(decisive) if decisive else None}


def annotator_stats(store: Store, submissions: list[dict[str, Any]], items: dict) -> list[dict[str, Any]]:
    """Per annotator: submissions, skips, median seconds per item, agreement with the others'
    majority per scored question, and gold accuracy."""
    skipped = store.skipped()
    reports = {q: annotator_report(judgments(q, submissions)) for q in store.config.questions if q in LEVELS}
    by_name: dict[str, list[dict[str, Any]]] = {}
    for sub in submissions:
        by_name.setdefault(sub["annotator"], []).append(sub)
    out = []
    for annotator in store.annotators():
        mine = by_name.get(annotator.name, [])
        if (annotator.role == "owner" and not mine) or annotator.name.startswith(JUDGE_PREFIX):
            continue
        seconds = [s["seconds"] for s in mine if s["seconds"] is not None]
        gold_total = gold_right = 0
        for sub in mine:
            gold = items[sub["item_id"]].gold
            for question, answer in (gold or {}).items():
                gold_total += 1
                gold_right += gold_score(question, sub["answer"][question], answer)
        out.append(
            {
                "name": annotator.name,
                "role": annotator.role,
                "submitted": len(mine),
                "skipped": skipped.get(annotator.name, 0),
                "median_seconds": statistics.median(seconds) if seconds else None,
                "agreement_with_majority": {
                    q: report.get(annotator.name, {}).get("agreement_with_majority")
                    for q, report in reports.items()
                },
                "gold_answered": gold_total,
                "gold_accuracy": gold_right / gold_total if gold_total else None,
            }
        )
    return out


def _public_config(store: Store) -> dict[str, Any]:
    cfg = store.config
    return {
        "questions": cfg.questions, "overlap": cfg.overlap, "scale": cfg.scale,
        "scale_step": cfg.scale_step, "labels": cfg.labels, "instructions": cfg.instructions,
    }  # fmt: skip


def format_stats(stats: dict[str, Any]) -> str:
    """The stats as text for the terminal."""
    p = stats["progress"]
    lines = [
        f"items: {p['items']} ({p['gold_items']} gold); submissions: {p['submitted']} of {p['needed']} needed "
        f"(overlap {stats['config']['overlap']}); complete items: {p['complete_items']}, started: {p['started_items']}"
    ]
    for question, q in stats["questions"].items():
        if "units" not in q:
            lines.append(f"{question}: {q['answers']} answers (free text, not scored)")
            continue
        parts = [f"{q['units_with_two_or_more']} of {q['units']} units judged by 2+"]
        for key in ("raw_agreement", "cohen_kappa", "fleiss_kappa", "krippendorff_alpha"):
            if q.get(key) is not None:
                parts.append(f"{key} {q[key]:.3f}")
        if "position_bias" in q and q["position_bias"]["shown_first_won"] is not None:
            parts.append(
                f"shown-first won {q['position_bias']['shown_first_won']:.1%} of {q['position_bias']['decisive']}"
            )
        lines.append(f"{question} ({q['level']}): " + ", ".join(parts))
    lines.append("annotators:")
    for a in stats["annotators"]:
        agree = (
            ", ".join(f"{q} {v:.0%}" for q, v in a["agreement_with_majority"].items() if v is not None) or "-"
        )
        secs = f"{a['median_seconds']:.1f}s" if a["median_seconds"] is not None else "-"
        gold = f"{a['gold_accuracy']:.0%} of {a['gold_answered']}" if a["gold_accuracy"] is not None else "-"
        lines.append(
            f"  {a['name']}: {a['submitted']} submitted, {a['skipped']} skipped, median {secs}/item, "
            f"agrees with majority: {agree}, gold: {gold}"
        )
    lines.extend(_judge_lines(stats.get("judges", [])))
    return "\n".join(lines)


def _judge_lines(judges: list[dict[str, Any]]) -> list[str]:
    lines = ["judges (against people, on the items both judged):"] if judges else []
    for j in judges:
        parts = [f"{j['items']} items judged, {j['abstained']} abstained, {j['inconsistent']} inconsistent"]
        for question, a in j["agreement"].items():
            if a["units"]:
                kappa = "-" if a["cohen_kappa"] is None else f"{a['cohen_kappa']:.3f}"
                parts.append(
                    f"{question}: agrees {a['raw_agreement']:.1%} of {a['units']} (on {a['items']} items), kappa {kappa}"
                )
            else:
                parts.append(f"{question}: no item judged by people too")
        lines.append(f"  {j['name']}: " + "; ".join(parts))
    return lines
