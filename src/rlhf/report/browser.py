"""Headless Chromium for looking at a report: the launch settings the screenshot script and the
browser test share. Uses Debian's Chromium (`scripts/setup.sh` installs package `chromium`;
RLHF_CHROMIUM points elsewhere) through Playwright, a dev dependency imported only here.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = os.environ.get("RLHF_CHROMIUM", "/usr/bin/chromium")
# No sandbox (containers, root), no GPU, and none of the browser's own network traffic.
FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip
VIEWPORT = {"width": 1280, "height": 900}


@contextmanager
def chromium():
    """A launched headless Chromium (a Playwright `Browser`), closed on exit."""
    if not Path(CHROMIUM).is_file():
        raise FileNotFoundError(
            f"{CHROMIUM} is missing: run scripts/setup.sh (installs Debian's chromium) or set RLHF_CHROMIUM"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            yield browser
        finally:
            browser.close()


def screenshot(report: str | Path, output: str | Path) -> Path:
    """Open the report file in headless Chromium and save a full-page PNG screenshot."""
    report, output = Path(report).resolve(), Path(output)
    if not report.is_file():
        raise FileNotFoundError(f"{report}: no such report")
    output.parent.mkdir(parents=True, exist_ok=True)
    with chromium() as browser:
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(report.as_uri())
        page.screenshot(path=str(output), full_page=True)
        page.close()
    return output
