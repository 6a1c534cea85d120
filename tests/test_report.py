"""`rlhf report`: run directories written here (small synthetic metrics in the pipeline's real
formats) become one self-contained HTML page; missing stages are named, hostile text is escaped,
a malformed log line is an error naming its file and line."""

from __future__ import annotations

import base64
import json
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import FULL_IMAGES, make_run, write_json, write_jsonl
from rlhf.data.errors import DataError
from rlhf.report import load_run, write_report
from rlhf.report.load import last_run, running_mean, series

RLHF = str(Path(sys.executable).with_name("rlhf"))
# Images of a full run: SFT curves, reward curves, reliability diagram, PPO curves, over-optimization.


def png_sizes(page: str) -> list[tuple[int, int]]:
    """(width, height) of every embedded image, read from its PNG header."""
    sizes = []
    for data in re.findall(r'<img src="data:image/png;base64,([^"]+)"', page):
        png = base64.b64decode(data)
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        sizes.append(struct.unpack(">II", png[16:24]))
    return sizes


def rlhf(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([RLHF, *args], capture_output=True, text=True, timeout=300)


def test_running_mean_series_and_last_run_by_hand():
    # window 2: [1], [1, 3], [3, 5], [5, 7] -> 1, 2, 4, 6
    assert running_mean([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]
    rows = [{"step": 1, "a": 1.0, "b": "text"}, {"step": 2, "a": "nan", "b": 2}, {"step": 3, "a": 3, "b": 4}]
    assert series(rows, "a") == ([1, 3], [1.0, 3.0])
    assert series(rows, "a", "b") == ([3], [3.0], [4.0])
    # A second run appended to the same log: its steps restart (equal steps stay in one run).
    log = [{"step": 1}, {"step": 2}, {"step": 2}, {"step": 1, "x": 1}, {"step": 2, "x": 2}]
    assert last_run(log) == (log[3:], 2)
    assert last_run(log[:3]) == (log[:3], 1)


def test_full_run_has_every_section_plot_and_table(tmp_path):
    import matplotlib.pyplot as plt

    run = make_run(tmp_path / "run")
    path = write_report(run)
    assert path == run / "report.html"
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "<title>rlhf report: run</title>" in page
    ids = re.findall(r'<section id="([a-z]+)">', page)
    assert ids == ["config", "sft", "feedback", "reward", "ppo", "evaluation", "comparison", "tax", "samples"]
    assert "This run evaluated one method" in page  # no comparison.json: said, not an error
    assert "Not measured: set <code>tax.texts</code>" in page  # no tax.json: said how to get it
    for heading in ("Configuration", "Supervised fine-tuning", "Human feedback", "Reward model", "PPO",
                    "Evaluation", "Samples", "Over-optimization"):  # fmt: skip
        assert f">{heading}</h" in page, heading
    sizes = png_sizes(page)
    assert len(sizes) == page.count("<img") == FULL_IMAGES
    assert all(w > 200 and h > 100 for w, h in sizes), sizes
    assert "no output" not in page and "exists but has no" not in page
    # Tables: headline, feedback, reward eval, win rate with its interval, scores, KL.
    assert "gold win rate" in page and "Krippendorff&#x27;s alpha" in page
    assert "66.7%" in page and "[45.0%, 88.0%]" in page
    assert "1 ± 0.2" in page and "1.5 ± 0.1" in page and "2.5 ± 0.5 nats per answer" in page
    assert "better one ranked #" in page
    # Before/after: the first 8 of the 12 rows; PPO samples from the first and the last step.
    assert "Old answer 7" in page and "Old answer 8" not in page
    assert "Prompt 1" in page and "Prompt 40" in page and "Prompt 20" not in page
    assert "Gold score (points" in page and "no gold scorer" not in page
    assert plt.get_fignums() == []  # figures never go through pyplot, so none stays open


def test_text_is_escaped_and_nothing_external(tmp_path):
    page = write_report(make_run(tmp_path / "run")).read_text(encoding="utf-8")
    assert "<script" not in page.lower() and "<b>kept</b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    # Whitespace kept: the answer's newline and indentation are in a preformatted cell, escaped.
    assert (
        '<td class="text">Line one &lt;script&gt;alert(1)&lt;/script&gt;\n    indented &amp; &lt;b&gt;kept'
        in page
    )
    assert "note: &#x27;&lt;script&gt;alert(1)&lt;/script&gt;&#x27;" in page  # config.yaml, verbatim
    text = re.sub(r'"data:image/png;base64,[^"]+"', '""', page)  # base64 may hold any "//x"
    assert not re.search(r"https?:|//[a-z]|@import|url\(", text)
    assert all(src.startswith("data:") for src in re.findall(r'(?:src|href)="([^"#][^"]*)"', page))


def test_missing_stages_are_named_and_nothing_crashes(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    page = write_report(empty).read_text(encoding="utf-8")
    assert page.count("<img") == 0
    assert "No <code>config.yaml</code>" in page
    for file in ("sft/metrics.jsonl", "feedback/feedback.json", "reward/metrics.jsonl", "reward_eval/eval.json",
                 "ppo/metrics.jsonl", "eval/eval.json", "eval/samples.jsonl", "ppo/samples.jsonl"):  # fmt: skip
        assert f"no output (<code>{file}</code> not found)" in page, file

    # A partial run: SFT and PPO only; the reward stage started (its directory exists) but left no log.
    run = make_run(tmp_path / "partial", skip=("feedback", "reward", "reward_eval", "eval"))
    (run / "reward").mkdir()
    page = write_report(run).read_text(encoding="utf-8")
    assert page.count("<img") == 3  # SFT curves, PPO curves, over-optimization
    assert "Reward-model training: <code>reward/</code> exists but has no <code>metrics.jsonl</code>" in page
    assert "Human feedback: no output" in page and "Policy evaluation: no output" in page
    assert "Prompt 40" in page  # the PPO samples are still shown


def test_ppo_without_gold_plots_reward_against_kl_and_says_so(tmp_path):
    run = make_run(tmp_path / "run", gold=False, skip=("sft", "reward", "reward_eval"))
    page = write_report(run).read_text(encoding="utf-8")
    assert page.count("<img") == 2
    assert "no gold scorer" in page and "Gold score (points" not in page


def test_appended_runs_show_the_last_one(tmp_path):
    run = make_run(tmp_path / "run", skip=("reward", "reward_eval", "ppo", "eval"))
    log = run / "sft" / "metrics.jsonl"
    second = [{"step": s, "train/loss": 9.0} for s in (1, 2, 3)]
    log.write_text(log.read_text() + "".join(json.dumps(r) + "\n" for r in second))
    data = load_run(run)
    assert data.sft == second and data.appended_runs == {"sft/metrics.jsonl": 2}
    page = write_report(run).read_text(encoding="utf-8")
    assert "holds 2 runs appended one after another" in page


@pytest.mark.parametrize("file", ["sft/metrics.jsonl", "ppo/samples.jsonl"])
def test_a_malformed_line_is_an_error_naming_file_and_line(tmp_path, file):
    run = make_run(tmp_path / "run")
    path = run / file
    lines = path.read_text().splitlines()
    lines[2] = lines[2][:-5]  # cut short, as by a kill mid-write
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:3: not valid JSON"):
        write_report(run)
    assert not (run / "report.html").exists()


def test_a_malformed_json_file_and_a_non_object_line(tmp_path):
    run = make_run(tmp_path / "run")
    (run / "eval" / "eval.json").write_text('{\n  "prompts": 12,\n  oops\n}')
    with pytest.raises(DataError, match=r"eval\.json:3: not valid JSON"):
        write_report(run)
    (run / "eval" / "eval.json").write_text("{}")
    (run / "reward" / "metrics.jsonl").write_text('{"step": 1}\n[1, 2]\n')
    with pytest.raises(DataError, match=r"reward/metrics\.jsonl:2: expected a JSON object, got list"):
        write_report(run)


@pytest.mark.slow
def test_cli_writes_the_report_and_reports_errors_in_one_line(tmp_path):
    run = make_run(tmp_path / "run")
    proc = rlhf("report", str(run))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(run / "report.html")
    assert (run / "report.html").read_text(encoding="utf-8").count("<img") == FULL_IMAGES

    out = tmp_path / "out" / "page.html"
    proc = rlhf("report", str(run), "--output", str(out))
    assert proc.returncode == 0 and proc.stdout.strip() == str(out) and out.is_file()

    proc = rlhf("report", str(tmp_path / "nowhere"))
    assert proc.returncode == 2 and proc.stderr == f"error: {tmp_path / 'nowhere'}: no such run directory\n"
    (run / "ppo" / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2,\n')
    proc = rlhf("report", str(run))
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"error: {run / 'ppo' / 'metrics.jsonl'}:2: not valid JSON")

    proc = rlhf("--help")
    assert proc.returncode == 0 and "    report" in proc.stdout


def test_sparse_files_still_make_a_page(tmp_path):
    run = tmp_path / "run"
    write_json(run / "feedback" / "feedback.json", {})
    write_json(run / "reward_eval" / "eval.json", {"accuracy": 0.7, "rewards": {"histogram": {"edges": [0]}}})
    write_json(run / "eval" / "eval.json", {"win_rate": {"gold": None}, "kl": {}})
    write_jsonl(
        run / "ppo" / "metrics.jsonl",
        [{"step": s, "ppo/kl": 0.1 * s, "ppo/reward/raw": "nan"} for s in (1, 2)],
    )
    write_jsonl(run / "eval" / "samples.jsonl", [{"prompt": None, "policy_scores": None}])
    page = write_report(run).read_text(encoding="utf-8")
    assert page.count("<img") == 1  # the KL curve; no reward on any step, so no over-optimization plot
    assert "No KL and reward on the same steps" in page
    assert "No calibration table" in page and "0.7" in page


def test_comparison_section_shows_every_policy_the_win_rates_and_the_score_against_kl(tmp_path):
    from rlhf.eval.compare import write_comparison
    from rlhf.report.comparison import comparison_section
    from rlhf.report.load import load_run

    run = make_run(tmp_path / "run")
    dpo = run / "eval" / "dpo"
    dpo.mkdir()
    rows = [json.loads(line) for line in (run / "eval" / "samples.jsonl").read_text().splitlines()]
    with (dpo / "samples.jsonl").open("w") as f:
        for i, row in enumerate(rows):
            f.write(
                json.dumps(
                    {"policy_scores": {k: v + (1 if i % 2 else -1) for k, v in row["policy_scores"].items()}}
                )
                + "\n"
            )
    (dpo / "eval.json").write_text(
        json.dumps({"kl": {"sequence": {"mean": 0.75, "stderr": 0.05}, "analytic": False}})
    )
    write_comparison(run / "eval", ["ppo", "dpo"], {"ppo": {"seconds": 12.0, "uses_reward_model": True},
                                                    "dpo": {"seconds": 3.0, "uses_reward_model": False}})  # fmt: skip
    html = comparison_section(load_run(run))
    assert "<th>PPO</th>" in html and "<th>DPO</th>" in html and "<td>SFT</td>" in html
    assert "Win rates by gold" in html and "0.75" in html
    sizes = png_sizes(html)
    assert len(sizes) == 1 and sizes[0][0] > 400  # one panel per judge, side by side


def test_the_kl_guard_says_whether_it_fired_and_at_which_steps(tmp_path):
    run = make_run(tmp_path / "quiet", skip=("sft", "reward", "reward_eval", "eval"))
    write_json(run / "ppo" / "summary.json", {"kl_flagged_steps": [], "kl_guard_limit": 20.0})
    page = write_report(run).read_text(encoding="utf-8")
    assert "KL guard: no step had a KL to the reference over 20 nats per completion" in page

    # Fired: named from the run's summary, with each step's KL from the metrics (0.3 x step there).
    write_json(run / "ppo" / "summary.json", {"kl_flagged_steps": [30, 35], "kl_guard_limit": 8.0})
    page = write_report(run).read_text(encoding="utf-8")
    assert (
        "KL guard: fired at 2 steps, the KL to the reference over 8 nats per completion: 30 (KL 9), 35 (KL 10.5)"
        in page
    )

    # A run cut short has no summary: the flags logged per step say it.
    (run / "ppo" / "summary.json").unlink()
    rows = [json.loads(line) for line in (run / "ppo" / "metrics.jsonl").read_text().splitlines()]
    rows[11]["ppo/kl_flagged"] = 1.0
    write_jsonl(run / "ppo" / "metrics.jsonl", rows)
    page = write_report(run).read_text(encoding="utf-8")
    assert "KL guard: fired at 1 step, the KL to the reference over its limit: 12 (KL 3.6)" in page
