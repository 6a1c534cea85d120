"""The labeling app in a real browser: Debian's Chromium driven headless by Playwright.

An annotator logs in with their link, labels pairs with the keyboard (prompts and completions full
of <script> and HTML that must show as text and never run), ranks three completions by keys and by
dragging, rates them, and undoes one; the owner checks the stats page and downloads the export; a
reward model trains a few steps on it. `scripts/setup.sh` installs Chromium (package `chromium`).
Set RLHF_SCREENSHOTS=DIR to keep the screenshots (docs/images holds the README's).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

from label_helpers import Running, make_project

RLHF = str(Path(sys.executable).with_name("rlhf"))
XSS = '<script>document.title="pwned"</script><img src=x onerror="document.title=\'pwned\'">'
CODE_ANSWER = (
    "Use a dictionary comprehension:\n\n```python\nsquares = {n: n * n for n in range(5)}\n"
    "print(squares)  # {0: 0, 1: 1, 2: 4, 3: 9, 4: 16}\n```\n\nIt builds the mapping in one pass."
)
PAIRS = [
    ("How do I map numbers to their squares in Python?", [CODE_ANSWER, "squares = []\nfor n in range(5):\n    squares.append(n)"]),
    (f"Summarize: {XSS}", [f"A summary. {XSS}", "<b>bold?</b> & <i>not</i> markup"]),
    ("Name a fruit.", ["An apple.", "A ro\u200bck.\u202e (reversed?)"]),  # invisible characters shown as marks
    ("Say hello politely.", ["Hello, nice to meet you!", "what"]),
]  # fmt: skip
RANKED = [
    ("Give a word that rhymes with cat.", ["hat", "dog", "bat, or mat"]),
    ("Count to three.", ["1 2 3", "one", "3 2 1"]),
]


def shoot(page, tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    keep = os.environ.get("RLHF_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / path.name)


@pytest.mark.slow
def test_label_in_a_real_browser_then_train_a_reward_model(browser, tmp_path):
    from playwright.sync_api import expect

    pairs = make_project(
        tmp_path / "pairs", ["pairwise"], PAIRS,
        instructions="Pick the answer that is more helpful and correct. Code must run as written.",
    )  # fmt: skip
    owner = pairs.add_annotator("olivia", "owner")
    ann = pairs.add_annotator("ann")
    ranked = make_project(tmp_path / "ranked", ["ranking", "rating"], RANKED, scale=[1, 7])
    ann2 = ranked.add_annotator("ann")
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    dialogs, console_errors = [], []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)

    with Running(pairs) as srv:
        base = f"http://127.0.0.1:{srv.port}"
        # Login page, a wrong token, then the personal link.
        page.goto(f"{base}/label")
        expect(page).to_have_url(f"{base}/login")
        page.fill("#token", "wrong")
        page.click("button[type=submit]")
        expect(page.locator(".error")).to_contain_text("not known")
        page.goto(f"{base}/login?token={ann}")
        expect(page).to_have_url(f"{base}/label")
        expect(page.locator("#prompt")).to_contain_text("squares in Python")
        expect(page.locator("#instructions")).to_contain_text("more helpful and correct")
        expect(page.locator("#completions pre.code").first).to_contain_text("squares = {n: n * n")
        shoot(page, tmp_path, "label-pairwise")
        # Keys: 1 = A better, 2 = B better (only the pairwise question: the key submits).
        keys = ["1", "2", "3", "1"]
        shown = []
        for key, (prompt, _) in zip(keys, PAIRS):
            expect(page.locator("#prompt")).to_contain_text(prompt[:20])
            shown.append([page.locator(".card").nth(i).locator(".text").inner_text() for i in range(2)])
            if "fruit" in prompt:
                marks = page.locator("#completions .invisible")
                expect(marks).to_have_count(2)
                assert (
                    marks.nth(0).inner_text() == "\u27e8U+200B\u27e9"
                    and marks.nth(1).inner_text() == "\u27e8U+202E\u27e9"
                )
            if "Summarize" in prompt:
                # The hostile text is shown as text: no element was made from it, nothing ran.
                expect(page.locator("#prompt")).to_contain_text("<script>document.title")
                assert page.locator("#task img").count() == 0 and page.locator("#task script").count() == 0
                assert page.locator("#task b, #task i").count() == 0
            page.keyboard.press(key)
        expect(page.locator("#done")).to_be_visible()
        expect(page.locator("#counts")).to_contain_text("4 / 4")
        page.keyboard.press("u")  # undo the last one: "Say hello" comes back
        expect(page.locator("#task")).to_be_visible()
        expect(page.locator("#prompt")).to_contain_text("Say hello")
        page.keyboard.press("2")
        expect(page.locator("#done")).to_be_visible()
        assert page.title() == "rlhf label" and not dialogs

        subs = sorted(pairs.submissions(), key=lambda s: s["item_id"])
        verdicts = [s["answer"]["pairwise"]["verdict"] for s in subs]
        assert verdicts == ["A", "B", "tie", "B"]
        for sub, texts in zip(subs, shown):
            original = pairs.item(sub["item_id"]).completions
            assert sub["order"] == [original.index(_strip(t, original)) for t in texts]

        # The owner: stats page, then the export download.
        owner_page = context.new_page()
        owner_page.goto(f"{base}/login?token={owner}")
        expect(owner_page).to_have_url(f"{base}/owner")
        expect(owner_page.locator("#annotators")).to_contain_text("ann")
        expect(owner_page.locator("#progress")).to_contain_text("4 of 4 judgments")
        shoot(owner_page, tmp_path, "label-owner")
        owner_page.select_option("#format", "pairs")
        with owner_page.expect_download() as info:
            owner_page.click("#export button[type=submit]")
        export = tmp_path / "pairs.jsonl"
        info.value.save_as(str(export))
        expect(owner_page.locator("#export-report")).to_contain_text("3 rows from 3 of 4 items")
        rows = [json.loads(line) for line in export.read_text().splitlines()]
        assert len(rows) == 3 and {r["annotators"][0] for r in rows} == {"ann"}

    with Running(ranked) as srv:
        base = f"http://127.0.0.1:{srv.port}"
        page.goto(f"{base}/login?token={ann2}")
        expect(page.locator("#prompt")).to_contain_text("rhymes with cat")
        # Rank by keys: C first, then A (B is last by elimination); then rate A, B, C with digits.
        page.keyboard.press("c")
        page.keyboard.press("a")
        expect(page.locator("#ranking li").first).to_contain_text("C")
        for digit in "725":
            page.keyboard.press(digit)
        shoot(page, tmp_path, "label-ranking")
        page.keyboard.press("Enter")
        expect(page.locator("#prompt")).to_contain_text("Count to three")
        # Rank by dragging: the third row onto the first, then confirm; rate with the buttons.
        page.locator("#ranking li").nth(2).drag_to(page.locator("#ranking li").nth(0))
        expect(page.locator("#ranking li").first).to_contain_text("C")
        for p, value in enumerate((4, 1, 6)):
            page.locator(
                f'[data-question=rating] .rating-row[data-position="{p}"] button[data-value="{value}"]'
            ).click()
        page.click("#submit")
        expect(page.locator("#done")).to_be_visible()
        first, second = sorted(ranked.submissions(), key=lambda s: s["item_id"])
        order = first["order"]
        assert first["answer"]["ranking"] == [order[2], order[0], order[1]]
        assert [first["answer"]["rating"][order[p]] for p in range(3)] == [7, 2, 5]
        order = second["order"]
        assert second["answer"]["ranking"] == [order[2], order[0], order[1]]
        assert [second["answer"]["rating"][order[p]] for p in range(3)] == [4, 1, 6]
    assert not console_errors, console_errors
    context.close()

    # The export trains a reward model (a few steps on the built-in tiny model).
    run = tmp_path / "reward"
    proc = subprocess.run(
        [RLHF, "reward", "--set", f"data.path={export}", "max_steps=3", "batch_size=2", "data.max_length=96",
         "eval.fraction=0", "save_every=0", f"output_dir={run}", "logging.progress=false",
         "logging.tensorboard=false"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "3 records" in proc.stdout and (run / "model").is_dir()
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("loss" in json.dumps(s) for s in steps)


def _strip(shown: str, originals: list[str]) -> str:
    """The original text a card shows (a card renders code blocks apart, so compare loosely)."""
    squash = lambda t: "".join(t.replace("```python", "").replace("```", "").split())  # noqa: E731
    marked = lambda t: "".join(  # noqa: E731  # the page's marks for characters no reader sees
        f"\u27e8U+{ord(c):04X}\u27e9" if unicodedata.category(c) == "Cf" else c for c in t
    )
    matches = [o for o in originals if squash(marked(o)) == squash(shown)]
    assert len(matches) == 1, (shown, originals)
    return matches[0]
