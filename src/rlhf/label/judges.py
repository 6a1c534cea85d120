"""LLM judges in a labeling project: their verdicts kept apart from people's, and how far they agree.

A judge is an annotator named `judge:<name>` that cannot log in (`rlhf label judge` fills it in
through `rlhf.judge.project`). Its verdicts are submissions like people's, answering only the
questions a judge answers (pairwise, ranking), but they never count toward the project's overlap:
a judged item still goes to its people. What the judge said about each item — its winner, P(a),
whether its two orders disagreed, whether it abstained — is kept in the item's `meta["judge"]`, for
the audit queue (`rlhf.label.queue`) and the owner page.

Agreement with people is measured on the items both judged, one unit per (item, person):

    pairwise  the judge's category (better completion, or tie) against the person's
    ranking   each pair of completions of the item: whether the judge and the person order it alike

with Cohen's kappa over those units (chance from the judge's and the people's own marginals).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Hashable
from typing import Any

from rlhf.label.agreement import cohen_kappa
from rlhf.label.queue import JUDGE_PREFIX, PEOPLE
from rlhf.label.store import REVOKED, Store, StoreError

JUDGED = ("pairwise", "ranking")
"""The questions a judge answers."""


def judge_annotator(store: Store, name: str) -> tuple[int, str]:
    """(annotator id, `judge:<name>`) of the judge, registered on first use (it has no token)."""
    if not name or not name.strip() or any(c.isspace() for c in name):
        raise StoreError(f"a judge needs a name without spaces, got {name!r}")
    full = name if name.startswith(JUDGE_PREFIX) else JUDGE_PREFIX + name
    with store._write() as conn:
        row = conn.execute("SELECT id FROM annotators WHERE name = ?", (full,)).fetchone()
        if row is None:
            conn.execute(
                "INSERT INTO annotators (name, token_hash, role, created) VALUES (?, ?, 'annotator', ?)",
                (full, f"{REVOKED}judge:{secrets.token_hex(16)}", time.time()),
            )
            row = conn.execute("SELECT id FROM annotators WHERE name = ?", (full,)).fetchone()
    return int(row[0]), full


def record_verdicts(store: Store, name: str, verdicts: list[tuple[int, dict[str, Any] | None, dict]]) -> None:
    """Store (item id, canonical answer or None for an abstention, what the judge said) for each item,
    in one transaction; a verdict the judge gave before on an item is replaced."""
    judge_id, full = judge_annotator(store, name)
    now = time.time()
    with store._write() as conn:
        for item_id, answer, said in verdicts:
            row = conn.execute("SELECT completions, meta FROM items WHERE id = ?", (item_id,)).fetchone()
            if row is None:
                raise StoreError(f"no item {item_id}", 404)
            conn.execute(
                "UPDATE submissions SET undone = 1 WHERE item_id = ? AND annotator_id = ? AND undone = 0",
                (item_id, judge_id),
            )
            conn.execute(
                "DELETE FROM assignments WHERE annotator_id = ? AND item_id = ?", (judge_id, item_id)
            )
            identity = json.dumps(list(range(len(json.loads(row[0])))))
            if answer is not None:
                conn.execute(
                    "INSERT INTO submissions (item_id, annotator_id, answer, display_order, created, seconds) "
                    "VALUES (?, ?, ?, ?, ?, NULL)",
                    (item_id, judge_id, json.dumps(answer, allow_nan=False), identity, now),
                )
            conn.execute(
                "INSERT INTO assignments VALUES (?, ?, ?, ?, 'submitted')", (judge_id, item_id, identity, now)
            )
            meta = json.loads(row[1] or "{}")
            meta.setdefault("judge", {})[full] = said
            conn.execute(
                "UPDATE items SET meta = ? WHERE id = ?", (json.dumps(meta, allow_nan=False), item_id)
            )


def _units(question: str, item_id: int, answer: Any) -> dict[Hashable, Any]:
    """unit -> value of one answer (see the module docstring)."""
    if question == "pairwise":
        return {item_id: answer["better"] if answer["better"] is not None else answer["verdict"]}
    place = {index: p for p, index in enumerate(answer)}
    return {
        (item_id, i, j): place[i] < place[j] for i in range(len(answer)) for j in range(i + 1, len(answer))
    }


def judge_stats(store: Store, submissions: list[dict[str, Any]], items: dict) -> list[dict[str, Any]]:
    """Per judge: items it judged, abstained on and was inconsistent on, and per judged question its
    agreement with people (units, items, raw agreement, Cohen's kappa)."""
    judges = sorted({sub["source"] for sub in submissions if sub["source"] != PEOPLE} | _seen(items))
    out = []
    for judge in judges:
        said = [item.meta["judge"][judge] for item in items.values() if judge in item.meta.get("judge", {})]
        entry: dict[str, Any] = {
            "name": judge,
            "items": len(said),
            "abstained": sum(s.get("abstained", False) for s in said),
            "inconsistent": sum(s.get("inconsistent", False) for s in said),
            "agreement": {},
        }
        for question in (q for q in JUDGED if q in store.config.questions):
            entry["agreement"][question] = _agreement(question, judge, submissions)
        out.append(entry)
    return out


def _seen(items: dict) -> set[str]:
    return {name for item in items.values() for name in item.meta.get("judge", {})}


def _agreement(question: str, judge: str, submissions: list[dict[str, Any]]) -> dict[str, Any]:
    theirs: dict[Hashable, Any] = {}
    for sub in submissions:
        if sub["source"] == judge and question in sub["answer"]:
            theirs.update(_units(question, sub["item_id"], sub["answer"][question]))
    judge_values, people_values, shared_items = [], [], set()
    for sub in submissions:
        if sub["source"] != PEOPLE or question not in sub["answer"]:
            continue
        for unit, value in _units(question, sub["item_id"], sub["answer"][question]).items():
            if unit in theirs:
                judge_values.append(theirs[unit])
                people_values.append(value)
                shared_items.add(sub["item_id"])
    agree = sum(a == b for a, b in zip(judge_values, people_values))
    count = len(judge_values)
    return {
        "units": count,
        "items": len(shared_items),
        "raw_agreement": agree / count if count else None,
        "disagreement": 1 - agree / count if count else None,
        "cohen_kappa": cohen_kappa(judge_values, people_values) if count else None,
    }
