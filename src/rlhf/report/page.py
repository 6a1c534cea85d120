"""The report page: one self-contained HTML file, sections in the order the loop runs.

Everything is inline: CSS in a `<style>` block, plots as `data:` PNG URIs, no script and no
external address of any kind, so the file can be mailed, archived or opened offline. Every piece
of text from the run (config, prompts, completions, names) is HTML-escaped.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from rlhf.report import sections
from rlhf.report.comparison import comparison_section, tax_section
from rlhf.report.load import RunData, load_run
from rlhf.report.markup import esc

STYLE = """
body { margin: 0; background: #f6f7f9; color: #1d2330; font: 15px/1.5 system-ui, -apple-system, "Segoe UI",
  Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 32px 48px; background: #fff; }
h1 { margin: 0 0 4px; font-size: 26px; }
h2 { margin: 36px 0 10px; padding-bottom: 4px; border-bottom: 2px solid #dde1e8; font-size: 20px; }
h3 { margin: 20px 0 8px; font-size: 16px; }
.meta { color: #5b6473; margin: 0 0 12px; }
nav a { margin-right: 14px; color: #2856b6; text-decoration: none; }
code { font: 13px/1.4 ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 14px; }
th, td { border: 1px solid #cfd5de; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #eef1f5; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.text { white-space: pre-wrap; word-break: break-word; font: 13px/1.45 ui-monospace, Menlo, Consolas, monospace; }
table.samples { width: 100%; table-layout: fixed; }
.missing { color: #8a5a00; background: #fff6e0; border-left: 4px solid #e0a800; padding: 6px 12px; }
.note { color: #5b6473; font-size: 14px; }
.guard { border-left: 4px solid #3a9a4a; padding: 6px 12px; background: #f1f8f2; }
.guard.warn { border-left-color: #c0392b; background: #fdf0ee; }
details { margin: 8px 0 16px; }
summary { cursor: pointer; color: #2856b6; }
pre.config { background: #f3f4f7; border: 1px solid #dde1e8; padding: 10px 14px; overflow-x: auto;
  font: 13px/1.45 ui-monospace, Menlo, Consolas, monospace; }
pre.headline { background: #f3f7f3; border: 1px solid #cfe0cf; padding: 10px 14px; overflow-x: auto;
  font: 14px/1.5 ui-monospace, Menlo, Consolas, monospace; }
figure { margin: 12px 0 20px; }
figure img { max-width: 100%; height: auto; border: 1px solid #e3e6eb; }
figcaption { color: #5b6473; font-size: 14px; margin-top: 4px; }
"""

# (anchor, heading, the function that writes the section), in the order the loop runs.
SECTIONS = (
    ("config", "Configuration", sections.config_section),
    ("sft", "Supervised fine-tuning", sections.sft_section),
    ("feedback", "Human feedback", sections.feedback_section),
    ("reward", "Reward model", sections.reward_section),
    ("ppo", "PPO", sections.ppo_section),
    ("evaluation", "Evaluation", sections.evaluation_section),
    ("comparison", "Methods compared", comparison_section),
    ("tax", "What alignment cost", tax_section),
    ("samples", "Samples", sections.samples_section),
)


def write_report(run_dir: str | Path, output: str | Path | None = None) -> Path:
    """Write the HTML report of a run directory; returns its path (default RUN_DIR/report.html)."""
    run = load_run(run_dir)
    path = Path(output) if output is not None else run.run_dir / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(run), encoding="utf-8")
    return path


def render_report(run: RunData) -> str:
    """The whole page as a string."""
    body = "\n".join(
        f'<section id="{key}">\n<h2>{title}</h2>\n{write(run)}\n</section>' for key, title, write in SECTIONS
    )
    nav = "".join(f'<a href="#{key}">{title}</a>' for key, title, _ in SECTIONS)
    written = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    name = esc(run.run_dir.resolve().name or str(run.run_dir))
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>rlhf report: {name}</title>
<style>{STYLE}</style>
</head>
<body>
<main>
<header>
<h1>RLHF run report</h1>
<p class="meta">Run directory <code>{esc(str(run.run_dir.resolve()))}</code>, report written {esc(written)}.</p>
<nav>{nav}</nav>
{sections.headline(run)}
</header>
{body}
</main>
</body>
</html>
"""
