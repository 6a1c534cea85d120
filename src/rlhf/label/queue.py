"""Which item an annotator gets next: the project's queue.

By default the item with the fewest people's submissions plus open assignments of others, below the
project's overlap, that the annotator has neither answered nor skipped; ties go to the lowest id,
so items finish evenly and nobody judges an item twice. Judges' verdicts (`rlhf label judge`) do not
count toward the overlap: a judged item still needs its people.

With `audit`, the items an LLM judge was least sure of come first: an abstention or an
inconsistent verdict (its two orders disagreed) first, then verdicts by their certainty |2 P(a) − 1|
to 6 decimals (a verdict without a probability counts as certain), items no judge has seen last;
the usual order breaks ties. A person's time goes where the judge is weakest.
"""

from __future__ import annotations

import json
from typing import Any

JUDGE_PREFIX = "judge:"
"""The start of a judge's annotator name (`judge:<name>`); people's names may not start with it."""
PEOPLE = "people"
"""The feedback source of people's submissions (a judge's is its annotator name, `judge:<name>`)."""
UNJUDGED = 2.0
"""The audit key of an item no judge has seen (after every judged one: certainty is at most 1)."""


def audit_key(meta: dict[str, Any]) -> float:
    """How sure the judges were of an item (lower: audit sooner), from its `meta["judge"]`."""
    judged = (meta.get("judge") or {}).values()
    keys = []
    for verdict in judged:
        if verdict.get("winner") is None or verdict.get("inconsistent"):
            keys.append(0.0)
        elif verdict.get("p_a") is None:
            keys.append(1.0)
        else:
            keys.append(round(abs(2.0 * float(verdict["p_a"]) - 1.0), 6))  # equal up to rounding: a tie
    return min(keys, default=UNJUDGED)


def pick_item(conn: Any, json_length: str, annotator_id: int, since: float, overlap: int, *, audit: bool):
    """(item id, completions) of the next item for `annotator_id`, or None when none is left;
    `since`: assignments made before it have lapsed; `json_length`: the backend's SQL for the
    number of completions of `i.completions`."""
    people = (
        "(SELECT COUNT(*) FROM submissions s JOIN annotators an ON an.id = s.annotator_id "
        f"WHERE s.item_id = i.id AND s.undone = 0 AND an.name NOT LIKE '{JUDGE_PREFIX}%')"
    )
    load = f"{people} + (SELECT COUNT(*) FROM assignments a WHERE a.item_id = i.id AND a.state = 'open' AND a.assigned > ?)"
    where = (
        "WHERE NOT EXISTS (SELECT 1 FROM assignments a WHERE a.item_id = i.id AND a.annotator_id = ?) "
        f"AND {load} < ?"
    )
    args = (since, annotator_id, since, overlap)
    if not audit:
        return conn.execute(
            f"SELECT i.id, {json_length} FROM items i {where} ORDER BY {load}, i.id LIMIT 1",
            (*args[1:], since),
        ).fetchone()
    rows = conn.execute(f"SELECT i.id, {json_length}, {load}, i.meta FROM items i {where}", args).fetchall()
    if not rows:
        return None
    best = min(rows, key=lambda r: (audit_key(json.loads(r[3] or "{}")), r[2], r[0]))
    return best[0], best[1]
