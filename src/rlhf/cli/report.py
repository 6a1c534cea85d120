"""`rlhf report RUN_DIR`: write the HTML report of a pipeline run."""

from __future__ import annotations

import argparse


def add_report_parser(sub) -> None:
    report = sub.add_parser(
        "report",
        help="one self-contained HTML page of a run: curves, tables, calibration, samples",
        description="Read a run directory (sft/, feedback/, reward/, reward_eval/, ppo/, eval/, any of "
        "them may be missing) and write one HTML file with every plot embedded; prints its path.",
    )
    report.add_argument("run_dir", metavar="RUN_DIR", help="the run directory to report on")
    report.add_argument(
        "--output", metavar="FILE", help="where to write the page (default: RUN_DIR/report.html)"
    )
    report.set_defaults(func=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> None:
    from rlhf.report import write_report

    print(write_report(args.run_dir, args.output))
