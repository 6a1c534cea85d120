"""People audit an LLM judge in a real browser (Chromium through Playwright): on the demo task the
simulated judge (the gold rule, wrong on 20% of pairs) labels a project through `rlhf label judge`;
served with `--audit`, a person gets the judge's least certain items first, and the owner page's
judge-against-people figures match a count by hand of what was stored. The export by source then
trains a reward model with the judge's rows weighted down (`data.sources`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from label_helpers import Running, make_project
from rlhf.demo.judge import SIMULATED_MODEL, simulated_judge
from rlhf.demo.task import document_of, gold
from rlhf.label.queue import audit_key
from test_label_judge import FLIP, SEED, demo_items, kappa_by_hand

RLHF = str(Path(sys.executable).with_name("rlhf"))
LABELED = 6


@pytest.mark.slow
def test_people_audit_the_judge_least_certain_first_in_a_browser(browser, tmp_path):
    from playwright.sync_api import expect

    store = make_project(tmp_path / "p", ["pairwise"], demo_items(16), overlap=1)
    owner = store.add_annotator("olivia", "owner")
    ann = store.add_annotator("ann")
    with simulated_judge(FLIP, SEED) as judge:
        sets = [f"url={judge.url}", f"model_name={SIMULATED_MODEL}", "api_key_env=null", "cache=null"]
        proc = subprocess.run([RLHF, "label", "judge", str(tmp_path / "p"), "--name", "gold", "--set", *sets],
                              capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "judge:gold judged 16 items (pairwise): 16 verdicts, 0 abstained, 0 inconsistent" in proc.stdout
    items = {item.id: item for item in store.items()}
    audit_order = sorted(items, key=lambda i: (audit_key(items[i].meta), i))

    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    with Running(store, audit=True) as srv:
        base = f"http://127.0.0.1:{srv.port}"
        page.goto(f"{base}/login?token={ann}")
        for n, item_id in enumerate(audit_order[:LABELED]):
            expect(page.locator("#prompt")).to_have_text(items[item_id].prompt)
            expect(page.locator("#counts")).to_contain_text(f"{n} / ")
            shown = [page.locator(".card").nth(p).locator(".text").inner_text() for p in range(2)]
            doc = document_of(items[item_id].prompt)
            diff = gold(doc, shown[0]) - gold(doc, shown[1])
            page.keyboard.press("3" if diff == 0 else ("1" if diff > 0 else "2"))  # ann goes by gold
        expect(page.locator("#prompt")).to_have_text(items[audit_order[LABELED]].prompt)

        # The owner page against a hand count of the stored answers.
        subs = list(store.submissions())
        people = {s["item_id"]: s["answer"]["pairwise"]["better"] for s in subs if s["source"] == "people"}
        people = {i: "tie" if v is None else v for i, v in people.items()}
        judged = {s["item_id"]: s["answer"]["pairwise"] for s in subs if s["source"] == "judge:gold"}
        x = [judged[i]["better"] if judged[i]["better"] is not None else "tie" for i in people]
        y = list(people.values())
        agree = sum(a == b for a, b in zip(x, y))
        owner_page = context.new_page()
        owner_page.goto(f"{base}/login?token={owner}")
        row = owner_page.locator('#judges tr[data-judge="judge:gold"]')
        expect(row.locator("td").nth(5)).to_have_text(f"{LABELED} ({LABELED})")
        expect(row.locator("td").nth(6)).to_have_text(f"{round(100 * agree / LABELED)}%")
        expect(row.locator("td").nth(8)).to_have_text(f"{kappa_by_hand(x, y):.3f}")
        expect(row.locator("td").nth(1)).to_have_text("16")
        expect(owner_page.locator("#progress")).to_contain_text("16 LLM judge verdicts")
        owner_page.select_option("#format", "pairs")
        with owner_page.expect_download() as info:
            owner_page.click("#export button[type=submit]")
        export = tmp_path / "pairs.jsonl"
        info.value.save_as(str(export))
    context.close()

    rows = [json.loads(line) for line in export.read_text().splitlines()]
    sources = {r["feedback_source"] for r in rows}
    assert sources == {"people", "judge:gold"}
    run = tmp_path / "reward"
    proc = subprocess.run(
        [RLHF, "reward", "--set", f"data.path={export}", "max_steps=2", "batch_size=2", "data.max_length=96",
         "eval.fraction=0", "save_every=0", f"output_dir={run}", "logging.progress=false",
         "logging.tensorboard=false", 'data.sources={people: 1.0, "judge:gold": 0.5}'],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    people_rows = sum(r["feedback_source"] == "people" for r in rows)
    assert (
        f"feedback sources: people {people_rows} rows x1, judge:gold {len(rows) - people_rows} rows x0.5"
        in proc.stdout
    )
