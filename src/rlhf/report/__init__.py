"""`rlhf report RUN_DIR`: one self-contained HTML page of a pipeline run.

    from rlhf.report import write_report
    path = write_report("runs/pipeline")          # -> runs/pipeline/report.html

Modules by role: `load` (the run directory -> `RunData`, every part optional), `plots` (matplotlib
figures as `data:` PNG URIs), `markup` (escaping, tables), `sections` (one per stage, in loop
order), `page` (the whole file: style, header, sections) and `browser` (headless Chromium settings
for the screenshot script and the browser test). matplotlib is imported only when a figure is drawn.
"""

from rlhf.report.load import RunData, load_run
from rlhf.report.page import render_report, write_report

__all__ = ["RunData", "load_run", "render_report", "write_report"]
