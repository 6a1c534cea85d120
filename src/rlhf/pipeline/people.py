"""The feedback stage with people in it (`feedback.source: people`).

The round's pairs (the training prompts' pairs `feedback.select` chose, and every pair of the
held-out prompts) become the items of a labeling project in `feedback/project` (SQLite, or the
team's PostgreSQL database), asked `pairwise` of `feedback.labelers` people each. The first run
creates it, prints how to serve it and each annotator's login link, and stops the pipeline with
`WaitingForPeople`: "waiting for 24 judgments, 0 given". A rerun opens the same project (never
adds an item twice) and goes on once every item has its judgments, or with whatever is there
when `feedback.take_what_is_there`; the export becomes the stage's pairs, split by prompt like
simulated feedback. Judgments live in the project's database, so nothing given is lost.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlhf.data.errors import DataError
from rlhf.data.text import seen_as
from rlhf.files import write_jsonl_atomic
from rlhf.pipeline import feedback as fb
from rlhf.pipeline.config import FeedbackConfig

LINKS_FILE = "links.txt"
SELECTION_FILE = "selection.json"
"""In the project folder: what the selection rule saw when it chose the project's pairs."""


class WaitingForPeople(Exception):
    """The project's judgments are not all in: the pipeline stops here, and a rerun goes on."""


def collect(
    out: Path, candidates: Path, f: FeedbackConfig, gold: Any, selection: Callable[[], fb.Selection | None]
) -> dict[str, Any]:
    """The people's pairs of this round, once they are in; `WaitingForPeople` until then. The
    pairs are chosen once, when the project is made (`selection()` loads the rule's reward models
    only then; `selection.json` keeps what the rule saw): a rerun reads the project as it is."""
    from rlhf.label.quality import project_stats

    rows = fb.read_jsonl(candidates)
    held = fb.heldout_prompts([fb.prompt_key(r.get("prompt")) for r in rows], f.heldout_fraction, f.seed)
    store, links = _project(out / "project", rows, held, f, selection, str(candidates))
    progress = store.progress()
    if progress["submitted"] < progress["needed"] and not f.take_what_is_there:
        store.close()
        raise WaitingForPeople(_waiting(out / "project", progress, links))
    stats = _export(out, store, f, held, gold)
    quality = project_stats(store)["questions"]["pairwise"]
    stats.update(
        source="people", project=str(out / "project"), items=progress["items"], judgments=progress["submitted"],
        judgments_needed=progress["needed"], raw_agreement=quality.get("raw_agreement"),
        krippendorff_alpha=quality.get("krippendorff_alpha"), prompts=len(rows), heldout_prompts=len(held),
        selection=_selection_seen(out / "project"),
    )  # fmt: skip
    store.close()
    fb.write_stats(out, stats)
    return stats


def _selection_seen(project: Path) -> dict[str, Any]:
    """What the selection rule saw when the project was made (`selection.json`), or that it is not
    known (a project made by hand, or one whose making was cut short)."""
    try:
        return json.loads((project / SELECTION_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"rule": "not recorded"}


def _items(rows: list[dict[str, Any]], held: set[str], allowed: set | None, path: str) -> list[tuple]:
    """(source, prompt, [a, b], None) for each pair people judge: the chosen training pairs, and
    every pair of distinct non-empty candidates of the held-out prompts."""
    items = []
    for number, row in enumerate(rows, 1):
        completions = row.get("completions")
        if not isinstance(completions, list) or not all(isinstance(c, str) for c in completions):
            raise DataError(path, number, "completions", "expected a list of strings")
        is_held = fb.prompt_key(row.get("prompt")) in held
        for a, b in itertools.combinations(range(len(completions)), 2):
            if allowed is not None and not is_held and (number - 1, a, b) not in allowed:
                continue
            first, second = completions[a], completions[b]
            if first.strip() and second.strip() and seen_as(first) != seen_as(second):
                items.append(
                    (f"{path}:{number} (completions {a} and {b})", row.get("prompt"), [first, second], None)
                )
    if not items:
        raise DataError(path, None, None, "no pair of distinct, non-empty candidates for people to judge")
    return items


def _project(directory: Path, rows: list[dict[str, Any]], held: set[str], f: FeedbackConfig,
             selection: Callable[[], fb.Selection | None], path: str) -> tuple[Any, list[str]]:  # fmt: skip
    """The round's labeling project and, when it was just made, its login links (`name\tpath`).
    Made the first time: the pairs chosen (`selection`), the items, the annotators; opened after,
    and checked to hold pairs of these candidates (sampled again, they would not)."""
    from rlhf.label.backend import DATABASE_FILE, DB_FILE
    from rlhf.label.store import Store
    from rlhf.label.tasks import ProjectConfig

    if any((directory / name).is_file() for name in (DB_FILE, DATABASE_FILE)):
        store = Store(directory)
        texts = {fb.prompt_key(r.get("prompt")): set(r.get("completions") or ()) for r in rows}
        if not all(
            set(item.completions) <= texts.get(fb.prompt_key(item.prompt), set()) for item in store.items()
        ):
            raise DataError(
                str(directory), None, None,
                "the labeling project holds other pairs than this round's candidates (they were sampled "
                "again?): move the project away to start it afresh, or restore the candidates it was made from",
            )  # fmt: skip
        return store, []
    allowed, selected = fb.selected_pairs(rows, held, selection(), f.seed, path)
    items = _items(rows, held, allowed, path)
    if f.database is not None:
        _ensure_database(f.database)
    cfg = ProjectConfig(questions=["pairwise"], overlap=f.labelers, instructions=f.instructions)
    store = Store.create(directory, cfg, f.database)
    store.add_items(items)
    (directory / SELECTION_FILE).write_text(json.dumps(selected, indent=2) + "\n", encoding="utf-8")
    lines = [f"{name}\t/login?token={store.add_annotator(name)}" for name in f.annotators]
    lines.append(f"owner\t/login?token={store.add_annotator('owner', 'owner')}")
    fd = os.open(directory / LINKS_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write("# each person's login link: append it to the served address, e.g. http://HOST:8000\n")
        out.write("\n".join(lines) + "\n")
    return store, lines


def _ensure_database(url: str) -> None:
    """Create the PostgreSQL database at `url` when it is not there (from the server's `postgres`
    database); a database that exists is left as it is."""
    import psycopg

    base, _, name = url.rpartition("/")
    name = name.split("?", 1)[0]
    try:
        psycopg.connect(url, connect_timeout=10).close()
        return
    except psycopg.OperationalError as err:
        if f'database "{name}" does not exist' not in str(err):
            raise DataError(None, None, "feedback.database", f"cannot reach the database: {err}") from None
    with psycopg.connect(f"{base}/postgres", autocommit=True, connect_timeout=10) as conn:
        conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))


def _waiting(directory: Path, progress: dict[str, int], links: list[str]) -> str:
    """The stop message; with the login links when the project was just made (they are in
    `links.txt` after)."""
    given, needed = progress["submitted"], progress["needed"]
    shown = "; ".join(
        f"{name} http://127.0.0.1:8000{path}" for name, path in (line.split("\t") for line in links)
    )
    return (
        f"waiting for {needed} judgments, {given} given ({progress['items']} pairs in "
        f"{directory}); serve it with `rlhf label serve {directory}` (add --host 0.0.0.0 for others to reach "
        f"it) and send each person their link ({shown or directory / LINKS_FILE}); rerun the pipeline when "
        "they are in, or set `feedback.take_what_is_there: true` to go on with what is there"
    )


def _export(out: Path, store: Any, f: FeedbackConfig, held: set[str], gold: Any) -> dict[str, Any]:
    """The project's pairs, split by prompt into the stage's files (and gold's held-out verdicts)."""
    from rlhf.label.export import export_rows

    rows, report = export_rows(store, "pairs", f.resolve, include_incomplete=f.take_what_is_there)
    train = [r for r in rows if fb.prompt_key(r["prompt"]) not in held]
    heldout = [r for r in rows if fb.prompt_key(r["prompt"]) in held]
    if not train:
        raise DataError(
            str(out / "project"), None, None, f"no training pairs in the judgments ({report.summary()})"
        )
    heldout_gold = []
    if gold is not None:
        for item in store.items():
            if fb.prompt_key(item.prompt) in held:
                scores = fb.gold_scores(gold, item.prompt, item.completions)
                if scores[0] != scores[1]:
                    win = 0 if scores[0] > scores[1] else 1
                    heldout_gold.append(
                        fb.pair_row(item.prompt, item.completions[win], item.completions[1 - win])
                    )
    write_jsonl_atomic(out / fb.TRAIN_FILE, train)
    write_jsonl_atomic(out / fb.HELDOUT_FILE, heldout)
    write_jsonl_atomic(out / fb.HELDOUT_GOLD_FILE, heldout_gold)
    return {"train_rows": len(train), "heldout_rows": len(heldout), "heldout_gold_rows": len(heldout_gold),
            "export": report.as_dict()}  # fmt: skip
