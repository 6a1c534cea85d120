"""`rlhf pipeline` with people in the loop (`feedback.source: people`), in rounds: the pipeline
makes each round's labeling project and stops, waiting; a person labels every pair in headless
Chromium; the rerun goes on with exactly those judgments, into the next round, which waits again.
On SQLite, and on PostgreSQL (a database per round, created by the pipeline)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import pipeline_config as config
from helpers import statuses
from label_helpers import Running
from rlhf.pipeline.run import run_pipeline

pytestmark = pytest.mark.slow

PEOPLE = ["rounds=2", "feedback.source=people", "feedback.labelers=1", "feedback.annotators=[ann]",
          "generate.data.limit=8", "generate.samples_per_prompt=3", "feedback.select=uncertainty",
          "feedback.budget=3"]  # fmt: skip


def label_every_pair(browser, project: Path) -> set[tuple[str, str, str]]:
    """Log in with ann's link and judge every pair by key (1: A better, 2: B better, alternating);
    returns (prompt, chosen, rejected) as the page showed them."""
    from playwright.sync_api import expect

    from rlhf.label.store import Store

    link = next(
        line.split("\t")[1]
        for line in (project / "links.txt").read_text().splitlines()
        if line.startswith("ann\t")
    )
    store = Store(project)
    items = store.items()
    judged = set()
    with Running(store) as srv:
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{srv.port}{link}")
        for n in range(len(items)):
            expect(page.locator("#task")).to_be_visible()
            prompt = squash(page.locator("#prompt").inner_text())
            shown = [squash(page.locator(".card").nth(k).locator(".text").inner_text()) for k in range(2)]
            # The pair on the page: its prompt and both texts (a prompt has several pairs).
            (item,) = [
                i
                for i in items
                if squash(i.prompt) == prompt and sorted(map(squash, i.completions)) == sorted(shown)
            ]
            texts = [next(c for c in item.completions if squash(c) == text) for text in shown]
            better = n % 2
            page.keyboard.press("1" if better == 0 else "2")
            expect(page.locator("#counts")).to_contain_text(f"{n + 1} / {len(items)} judgments")  # stored
            judged.add((item.prompt, texts[better], texts[1 - better]))
        expect(page.locator("#done")).to_be_visible()
        page.close()
    store.close()
    return judged


def squash(text: str) -> str:
    """Text as compared with the page's: without whitespace (the page wraps and trims it)."""
    return "".join(text.split())


def pairs_of(path: Path) -> set[tuple[str, str, str]]:
    return {(r["prompt"], r["chosen"], r["rejected"]) for r in map(json.loads, path.read_text().splitlines())}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_rounds_with_people_wait_then_go_on_with_exactly_their_judgments(tmp_path, browser, backend, request):
    more = list(PEOPLE)
    if backend == "postgresql":
        server = request.getfixturevalue("pg_server")
        more.append(f"feedback.database={server}/people_{tmp_path.name[-12:].lower()}_{{round}}")
    cfg = config(tmp_path, *more)
    run = Path(cfg.output_dir)
    first = run_pipeline(cfg, log=lambda _: None)
    assert first["waiting"].startswith("round 0: waiting for ") and ", 0 given" in first["waiting"]
    project0 = run / "round_0" / "feedback" / "project"
    assert statuses(first["rounds_summaries"][0])["feedback"] == "waiting"
    assert not (run / "round_1").joinpath("generate").exists()

    assert "(ann http://127.0.0.1:8000/login?token=" in first["waiting"]  # the links, once
    again = run_pipeline(cfg, log=lambda _: None)  # nothing judged yet: still waiting, nothing added twice
    assert ", 0 given" in again["waiting"] and f"({project0 / 'links.txt'})" in again["waiting"]
    judged0 = label_every_pair(browser, project0)

    second = run_pipeline(cfg, log=lambda _: None)
    assert second["waiting"].startswith("round 1: waiting for ")
    feedback0 = run / "round_0" / "feedback"
    assert pairs_of(feedback0 / "pairs.jsonl") | pairs_of(feedback0 / "heldout.jsonl") == judged0
    stats0 = json.loads((feedback0 / "feedback.json").read_text())
    assert stats0["judgments"] == stats0["judgments_needed"] == len(judged0)
    assert stats0["selection"]["rule"] == "random"  # round 0: no reward model to be unsure with
    judged1 = label_every_pair(browser, run / "round_1" / "feedback" / "project")

    done = run_pipeline(cfg, log=lambda _: None)
    assert "waiting" not in done and [r["round"] for r in done["rounds"]] == [0, 1]
    feedback1 = run / "round_1" / "feedback"
    assert json.loads((feedback1 / "feedback.json").read_text())["selection"]["rule"] == "uncertainty"
    assert pairs_of(feedback1 / "new_pairs.jsonl") | pairs_of(feedback1 / "new_heldout.jsonl") == judged1
    # All feedback so far, each judgment once.
    train_all = [json.loads(line) for line in (feedback1 / "pairs.jsonl").read_text().splitlines()]
    assert len(train_all) == len({(r["prompt"], r["chosen"], r["rejected"]) for r in train_all})
    assert pairs_of(feedback1 / "pairs.jsonl") == pairs_of(feedback0 / "pairs.jsonl") | pairs_of(
        feedback1 / "new_pairs.jsonl"
    )
    # A rerun changes nothing: both rounds are finished.
    last = run_pipeline(cfg, log=lambda _: None)
    for round_summary in last["rounds_summaries"]:
        assert set(statuses(round_summary).values()) <= {"skipped (finished)", "input"}
    if backend == "postgresql":
        assert (project0 / "database.json").is_file() and not (project0 / "label.db").exists()


def test_the_cli_stops_with_status_3_and_says_what_it_waits_for(tmp_path):
    import subprocess
    import sys

    from helpers import tiny_overrides

    gold = tmp_path / "gold.py"
    gold.write_text("def score(prompts, completions):\n    return [float(len(c)) for c in completions]\n")
    rlhf = str(Path(sys.executable).with_name("rlhf"))
    args = [rlhf, "pipeline", "--set", *tiny_overrides(tmp_path / "run", gold), *PEOPLE]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 3, proc.stderr[-2000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("[pipeline] stopped: round 0: waiting for ") and "rlhf label serve" in last
