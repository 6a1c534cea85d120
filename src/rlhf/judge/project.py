"""`rlhf label judge PROJECT`: an LLM judge labels a labeling project's items as an annotator of its
own, `judge:<name>`, beside the people (`rlhf.label.judges`).

A `pairwise` project's items are compared (`PairwiseJudge`, both orders); a `ranking` project's
are ranked K at once (`RankingJudge`, as given and reversed). Its verdicts never use up the people's
overlap. Items the judge has already judged are left alone unless `again` (its cache answers the
same questions for free). Abstentions and inconsistent verdicts are recorded as such — no answer
is stored for them — so the owner page counts them and the audit queue puts them first.
"""

from __future__ import annotations

from typing import Any

from rlhf.judge.config import JudgeConfig
from rlhf.label.judges import JUDGED, judge_annotator, record_verdicts
from rlhf.label.store import Item, Store, StoreError


def judge_project(
    store: Store, cfg: JudgeConfig, name: str, *, again: bool = False, limit: int | None = None
) -> dict[str, Any]:
    """Judge the project's items (those not judged yet by `name`, or all with `again`; at most
    `limit`); returns counts of what the judge said."""
    question = next((q for q in JUDGED if q in store.config.questions), None)
    if question is None:
        raise StoreError(
            f"an LLM judge answers pairwise or ranking questions; this project asks {', '.join(store.config.questions)}"
        )
    _, full = judge_annotator(store, name)
    items = [item for item in store.items() if again or full not in item.meta.get("judge", {})]
    items = items[:limit] if limit is not None else items
    if not items:
        return {"judge": full, "question": question, "items": 0, "verdicts": 0, "abstained": 0,
                "inconsistent": 0, "requests_sent": 0}  # fmt: skip
    verdicts, sent = (_pairwise if question == "pairwise" else _ranking)(cfg, items)
    record_verdicts(store, full, verdicts)
    said = [v[2] for v in verdicts]
    return {
        "judge": full, "question": question, "items": len(items),
        "verdicts": sum(v[1] is not None for v in verdicts),
        "abstained": sum(s["abstained"] for s in said), "inconsistent": sum(s["inconsistent"] for s in said),
        "requests_sent": sent,
    }  # fmt: skip


def _pairwise(cfg: JudgeConfig, items: list[Item]) -> tuple[list, int]:
    from rlhf.judge.pairwise import PairwiseJudge

    judge = PairwiseJudge(cfg)
    try:
        found = judge.compare([i.prompt for i in items], [i.completions[0] for i in items],
                              [i.completions[1] for i in items])  # fmt: skip
        sent = judge.client.sent
    finally:
        judge.close()
    out = []
    for item, v in zip(items, found):
        said = {
            "winner": v.winner,
            "p_a": v.p_a,
            "inconsistent": v.inconsistent,
            "abstained": v.winner is None,
        }
        answer = None
        if v.winner is not None:
            letter = {"a": "A", "b": "B", "tie": "tie"}[v.winner]
            answer = {"pairwise": {"verdict": letter, "better": {"a": 0, "b": 1}.get(v.winner)}}
        out.append((item.id, answer, said))
    return out, sent


def _ranking(cfg: JudgeConfig, items: list[Item]) -> tuple[list, int]:
    from rlhf.judge.ranking import RankingJudge

    judge = RankingJudge(cfg)
    try:
        found = judge.rank([i.prompt for i in items], [i.completions for i in items])
        sent = judge.client.sent
    finally:
        judge.close()
    out = []
    for item, v in zip(items, found):
        abstained = v.order is None and not v.inconsistent
        said = {"winner": v.order, "p_a": None, "inconsistent": v.inconsistent, "abstained": abstained}
        out.append((item.id, None if v.order is None else {"ranking": v.order}, said))
    return out, sent
