"""Full-page screenshot of an `rlhf report` page in headless Chromium.

.venv/bin/python scripts/report_screenshot.py runs/pipeline/report.html docs/images/report.png
"""

from __future__ import annotations

import argparse

from rlhf.report.browser import screenshot


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument(
        "report", metavar="REPORT_HTML", help="the report file (rlhf report RUN_DIR writes it)"
    )
    parser.add_argument("output", metavar="OUT_PNG", help="the PNG to write")
    args = parser.parse_args()
    print(screenshot(args.report, args.output))


if __name__ == "__main__":
    main()
