"""Creating a labeling project from a file of candidates (what `rlhf generate` writes).

Each row gives a prompt and its completions. A `pairwise` project needs two completions per item:
a row with K > 2 completions gives one item per pair of them (K(K−1)/2), and pairs of identical
texts are left out (nothing to compare). Other questions take the row's completions as one item.
Rows may carry a `gold` answer (written like an annotator's, completions in file order, e.g.
{"pairwise": "A"}); gold items are labelled like the others and score the annotators.
Comparisons and rankings are read too (their completions, blind: the old verdict is dropped).
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhf.data import DataError
from rlhf.data.jsonl import prompt_to_json
from rlhf.data.records import Candidates, Comparison, Ranking
from rlhf.data.text import seen_as
from rlhf.label.store import Store
from rlhf.label.tasks import AnswerError, ProjectConfig, check_gold


@dataclass
class InitReport:
    rows: int = 0
    items: int = 0
    gold: int = 0
    left_out: Counter = field(default_factory=Counter)

    def summary(self) -> str:
        text = f"{self.items} items ({self.gold} gold) from {self.rows} rows"
        if self.left_out:
            text += "; left out: " + ", ".join(f"{n} {why}" for why, n in self.left_out.most_common())
        return text


def read_tasks(
    path: str | Path, cfg: ProjectConfig
) -> tuple[list[tuple[str, Any, list[str], Any]], InitReport]:
    """(source, prompt, completions, gold) per item; every problem names the file and line."""
    from rlhf.data.load import load_records

    loaded = load_records(str(path))
    if loaded.kind not in ("candidates", "ranking", "comparison"):
        raise DataError(
            str(path), None, None,
            f"found {loaded.kind} data (format `{loaded.format}`); a labeling project needs completions to "
            "judge: `candidates` rows {prompt, completions} as `rlhf generate` writes them",
        )  # fmt: skip
    report = InitReport(rows=len(loaded.records))
    low, high = cfg.completions_needed()
    items: list[tuple[str, Any, list[str], dict[str, Any] | None]] = []
    for record in loaded.records:
        if isinstance(record, Comparison):
            completions = [record.chosen, record.rejected]
        elif isinstance(record, Ranking | Candidates):
            completions = list(record.completions)
        else:  # refused above: only comparisons, rankings and candidates reach here
            raise TypeError(f"{record.source}: a {record.kind} record in a labeling project")
        source = str(record.source)
        gold_raw = record.meta.get("gold") if loaded.kind == "candidates" else None
        if len(completions) < low:
            raise DataError.at(
                record.source, "completions",
                f"{len(completions)} completion(s), but the questions {cfg.questions} need at least {low}",
            )  # fmt: skip
        prompt = prompt_to_json(record.prompt)
        if high is not None and len(completions) > high:
            if gold_raw is not None:
                raise DataError.at(
                    record.source, "gold", "a gold answer needs a row with exactly 2 completions"
                )
            for i, j in itertools.combinations(range(len(completions)), 2):
                if seen_as(completions[i]) == seen_as(completions[j]):
                    report.left_out["pairs of identical completions"] += 1
                    continue
                items.append(
                    (f"{source} (completions {i} and {j})", prompt, [completions[i], completions[j]], None)
                )
            continue
        if "pairwise" in cfg.questions and seen_as(completions[0]) == seen_as(completions[1]):
            report.left_out["pairs of identical completions"] += 1
            continue
        gold: dict[str, Any] | None = None
        if gold_raw is not None:
            try:
                gold = check_gold(gold_raw, cfg, completions)
            except AnswerError as err:
                raise DataError.at(record.source, "gold", str(err)) from None
            report.gold += 1
        items.append((source, prompt, completions, gold))
    if loaded.report.skipped:
        report.left_out["bad rows"] += len(loaded.report.skipped)
    report.items = len(items)
    if not items:
        raise DataError(str(path), None, None, f"no items to label ({report.summary()})")
    return items, report


def init_project(
    directory: str | Path,
    tasks: str | Path,
    cfg: ProjectConfig,
    *,
    owner: str = "owner",
    database_url: str | None = None,
) -> tuple[Store, str, InitReport]:
    """Create the project (in SQLite, or in the PostgreSQL database at `database_url`), load its items
    and register the owner; returns (store, owner token, report)."""
    items, report = read_tasks(tasks, cfg)  # read first: a bad file creates nothing
    store = Store.create(directory, cfg, database_url)
    store.add_items(items)
    token = store.add_annotator(owner, "owner")
    return store, token, report
