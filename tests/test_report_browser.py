"""The report in a real browser: Debian's Chromium, headless, through Playwright (the launch
settings of `rlhf.report.browser`, which the screenshot script uses too). The page must load with
no console or page error, fetch nothing but its own file and `data:` URIs, decode every plot, show
hostile text as text, and carry the right title and headings. `scripts/setup.sh` installs Chromium.
Set RLHF_SCREENSHOTS=DIR to keep the screenshot.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from helpers import FULL_IMAGES, XSS, make_run, open_report
from rlhf.report import write_report

HEADINGS = ["Configuration", "Supervised fine-tuning", "Human feedback", "Reward model", "PPO", "Evaluation",
            "Methods compared", "What alignment cost", "Samples"]  # fmt: skip


def test_report_in_a_real_browser(browser, tmp_path):
    report = write_report(make_run(tmp_path / "run"))
    page, seen = open_report(browser, report)

    assert page.title() == "rlhf report: run"
    assert page.locator("h1").inner_text() == "RLHF run report"
    assert page.locator("section > h2").all_inner_texts() == HEADINGS
    images = page.locator("img")
    assert images.count() == FULL_IMAGES
    widths = page.eval_on_selector_all(
        "img", "els => els.map(e => [e.complete, e.naturalWidth, e.naturalHeight])"
    )
    assert all(done and w > 0 and h > 0 for done, w, h in widths), widths
    # Hostile text shows as text; nothing in the page is a script or came from one.
    assert page.locator("script").count() == 0 and page.locator("td b").count() == 0
    assert XSS in page.locator("table.samples").first.inner_text()
    page.locator("#config summary").click()
    assert XSS in page.locator("#config pre").inner_text()
    assert page.title() == "rlhf report: run"  # no injected script changed it

    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("RLHF_SCREENSHOTS"):
        Path(os.environ["RLHF_SCREENSHOTS"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(os.environ["RLHF_SCREENSHOTS"]) / "report.png")
    page.close()
    assert not seen["console"], seen["console"]
    assert not seen["errors"], seen["errors"]
    assert seen["requests"] and all(url.startswith(("file:", "data:")) for url in seen["requests"]), seen


def test_report_of_an_empty_run_in_a_real_browser(browser, tmp_path):
    (tmp_path / "empty").mkdir()
    page, seen = open_report(browser, write_report(tmp_path / "empty"))
    assert page.locator("section > h2").all_inner_texts() == HEADINGS
    assert page.locator("img").count() == 0
    assert page.locator("p.missing").count() >= 8
    page.close()
    assert not seen["console"] and not seen["errors"], seen
