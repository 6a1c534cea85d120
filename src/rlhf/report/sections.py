"""The report's sections, one function per stage in loop order, each returning an HTML fragment.

A section shows what its stage left in the run directory and says plainly what is missing; it never
fails on a stage that did not run. Text from the run is escaped by the `markup` helpers.
"""

from __future__ import annotations

import json
from typing import Any

from rlhf.report import plots
from rlhf.report.load import RunData, is_number, numeric_keys, series
from rlhf.report.markup import (
    Text,
    details,
    esc,
    figure,
    fmt,
    key_values,
    mean_stderr,
    missing,
    percent,
    table,
)

SAMPLE_ROWS = 8
"""Rows of the before/after table (and of the PPO training samples)."""
# PPO curves, in this order, each in its own panel when the run logged it.
PPO_CURVES = (
    ("ppo/reward/raw", "reward-model reward (raw)"),
    ("ppo/reward/normalized", "reward (normalized)"),
    ("ppo/reward/gold", "gold score"),
    ("ppo/kl", "KL from the reference"),
    ("ppo/beta", "KL coefficient (beta)"),
    ("ppo/entropy", "entropy"),
    ("ppo/response_length", "response length (tokens)"),
    ("ppo/clip_frac", "clip fraction"),
)
SKIPPED_KEYS = {"elapsed_s"}
# What the reward-model evaluation table shows of `reward_eval/eval.json`, in this order.
REWARD_EVAL_FIELDS = {
    "accuracy": "accuracy",
    "margin": "mean margin",
    "ece": "expected calibration error",
    "loss": "loss",
    "pairs": "pairs",
    "records": "records",
    "data": "data",
    "model": "model",
}
FEEDBACK_LABELS = {
    "raw_agreement": "raw agreement between labelers",
    "krippendorff_alpha": "Krippendorff's alpha",
    "gold_agreement": "agreement with the gold preference",
}


def stage_missing(run: RunData, stage: str, file: str, what: str) -> str:
    """The notice for a stage without the file the report reads: never ran, or left no output."""
    if run.has_stage_dir(stage):
        return missing(f"{esc(what)}: <code>{esc(stage)}/</code> exists but has no <code>{esc(file)}</code>.")
    return missing(f"{esc(what)}: no output (<code>{esc(stage)}/{esc(file)}</code> not found).")


def grouped_panels(rows: list[dict[str, Any]]) -> list[plots.Panel]:
    """One panel per metric name, train and eval drawn together (`train/loss` with `eval/loss`)."""
    panels: dict[str, list[plots.Curve]] = {}
    for key in numeric_keys(rows):
        if key in SKIPPED_KEYS:
            continue
        name = key.rsplit("/", 1)[-1]
        steps, values = series(rows, key)
        panels.setdefault(name, []).append((key, steps, values))
    # A metric alone in its panel keeps its full name (`eval/ece`); a group is named by what it shares.
    return [(curves[0][0] if len(curves) == 1 else name, curves) for name, curves in panels.items()]


def curves(rows: list[dict[str, Any]], stage: str, what: str) -> str:
    """The training-curve figure of a stage's metrics, or a notice when there is nothing to draw."""
    panels = grouped_panels(rows)
    if not panels:
        return missing(f"<code>{esc(stage)}/metrics.jsonl</code> holds no numeric metrics.")
    caption = f"{esc(what)} from <code>{esc(stage)}/metrics.jsonl</code> ({len(rows)} lines)."
    if any(len(c[2]) > plots.SMOOTH_ABOVE for _, cs in panels for c in cs):
        caption += " Long curves are drawn faint with their running mean on top."
    return figure(plots.curves_figure(panels), f"{what} curves", caption)


def appended_note(run: RunData, path: str) -> str:
    """A note when the file held several runs, appended one after another (only the last is shown)."""
    runs = run.appended_runs.get(path)
    if not runs:
        return ""
    return (
        f'<p class="note"><code>{esc(path)}</code> holds {runs} runs appended one after another (the step '
        "count restarts); the report shows the last one.</p>"
    )


def as_dict(value: Any) -> dict[str, Any]:
    """The value when it is a dict, else an empty one (a field a file may lack or get wrong)."""
    return value if isinstance(value, dict) else {}


def last_value(rows: list[dict[str, Any]], key: str) -> Any:
    steps, values = series(rows, key)
    return values[-1] if values else None


# ---------------------------------------------------------------------------------------------
# Sections


def headline(run: RunData) -> str:
    """The key numbers of `summary.json` (its `headline`, else its top-level numbers)."""
    if run.summary is None:
        return ""
    from rlhf.report.headline import headline_table

    data = run.summary.get("headline")
    if not isinstance(data, dict):
        data = {k: v for k, v in run.summary.items() if not isinstance(v, dict | list)}
    if not data:
        return ""
    table_text = headline_table(data)
    if table_text.count("\n") < 1:  # none of the pipeline's headline numbers: show what is there
        return "<h3>Headline</h3>\n" + key_values(data)
    flags = "".join(
        f'<p class="guard warn overoptimization">{esc(str(flag.get("line")))}</p>\n'
        for flag in data.get("overoptimization") or []
        if isinstance(flag, dict)
    )
    return f'<h3>Headline</h3>\n{flags}<pre class="headline">{esc(table_text)}</pre>\n' + details(
        "every headline number", json.dumps(data, indent=2)
    )


def config_section(run: RunData) -> str:
    parts = []
    if run.config_text is None:
        parts.append(missing("No <code>config.yaml</code> in the run directory."))
    else:
        parts.append(details("config.yaml (the pipeline's configuration)", run.config_text))
    return "\n".join(parts)


def stage_config(run: RunData, stage: str) -> str:
    """The stage's training data as loaded (rows skipped by problem, items left out) and its config."""
    text = run.stage_configs.get(stage)
    config = details(f"{stage}/config.yaml (this stage's resolved configuration)", text) if text else ""
    return data_report(run.data_reports.get(stage)) + config


def data_report(report: dict[str, Any] | None) -> str:
    """A table of a stage's `data_report`: what was read and kept, and why the rest was not."""
    if not report:
        return ""
    rows = [["data", report.get("path")], ["format", report.get("format")],
            ["rows read", report.get("rows_read")], ["records kept", report.get("records_kept")]]  # fmt: skip
    if report.get("skipped"):
        rows.append(
            [
                "rows skipped",
                f"{report['skipped']} (lines {', '.join(map(str, report.get('skipped_lines', [])))})",
            ]
        )
    rows += [
        [f"skipped: {problem}", count] for problem, count in (report.get("skipped_by_problem") or {}).items()
    ]
    rows += [[f"left out: {reason}", count] for reason, count in (report.get("left_out") or {}).items()]
    if report.get("unread_judgments"):
        rows.append(["fields not read that look like judgments", ", ".join(report["unread_judgments"])])
    return table(["training data", ""], rows)


def sft_section(run: RunData) -> str:
    if run.sft is None:
        return stage_missing(run, "sft", "metrics.jsonl", "Supervised fine-tuning")
    rows = run.sft
    facts = [["logged lines", len(rows)]]
    for key in ("train/loss", "eval/loss"):
        if (value := last_value(rows, key)) is not None:
            facts.append([f"final {key}", value])
    parts = [appended_note(run, "sft/metrics.jsonl"), table(["", "value"], facts), curves(rows, "sft", "SFT")]
    return "\n".join([*parts, stage_config(run, "sft")])


def feedback_section(run: RunData) -> str:
    if run.feedback is None:
        return stage_missing(run, "feedback", "feedback.json", "Human feedback")
    rows = [[FEEDBACK_LABELS.get(key, key), value] for key, value in run.feedback.items()]
    return table(["", "value"], rows)


def reward_section(run: RunData) -> str:
    parts = ["<h3>Training</h3>"]
    if run.reward is None:
        parts.append(stage_missing(run, "reward", "metrics.jsonl", "Reward-model training"))
    else:
        parts.append(appended_note(run, "reward/metrics.jsonl"))
        parts.append(curves(run.reward, "reward", "Reward-model training"))
        parts.append(stage_config(run, "reward"))
    parts.append("<h3>Held-out evaluation</h3>")
    result = run.reward_eval
    if result is None:
        parts.append(stage_missing(run, "reward_eval", "eval.json", "Reward-model evaluation"))
        return "\n".join(parts)
    rows = [[label, result[key]] for key, label in REWARD_EVAL_FIELDS.items() if key in result]
    parts.append(table(["", "value"], rows))
    positions = result.get("accuracy_by_position") or result.get("per_position")
    if isinstance(positions, list) and positions:
        # Positions are 0-based (0 = the best-ranked completion); shown 1-based.
        rows = [
            [p["position"] + 1 if is_number(p.get("position")) else "-", p.get("accuracy"), p.get("pairs")]
            for p in positions
            if isinstance(p, dict)
        ]
        parts.append("<p>Accuracy by the rank of the better completion:</p>")
        parts.append(table(["better one ranked #", "accuracy", "pairs"], rows))
    elif isinstance(positions, dict) and positions:
        parts.append("<p>Accuracy by position:</p>" + key_values(positions))
    calibration = result.get("calibration")
    if isinstance(calibration, dict) and calibration.get("bins"):
        histogram = as_dict(as_dict(result.get("rewards")).get("histogram"))
        edges, counts = histogram.get("edges"), histogram.get("counts")
        usable = isinstance(edges, list) and isinstance(counts, list) and len(edges) == len(counts) + 1
        uri = plots.reliability_figure(
            calibration["bins"], calibration.get("ece", result.get("ece")), histogram if usable else None
        )
        caption = (
            "Reliability diagram: for held-out pairs binned by the model's predicted probability that the "
            "preferred completion wins, how often it did. Points on the diagonal are perfectly calibrated; "
            "a point's area is its number of pairs."
        )
        parts.append(figure(uri, "reward model reliability diagram", caption))
    else:
        parts.append('<p class="note">No calibration table in <code>reward_eval/eval.json</code>.</p>')
    return "\n".join(parts)


def ppo_section(run: RunData) -> str:
    if run.ppo is None:
        return stage_missing(run, "ppo", "metrics.jsonl", "PPO")
    rows = run.ppo
    panels = []
    for key, title in PPO_CURVES:
        steps, values = series(rows, key)
        if values:
            panels.append((title, [(key, steps, values)]))
    if not panels:
        return missing("<code>ppo/metrics.jsonl</code> holds none of the PPO curves.")
    logged = [row for row in rows if any(is_number(row.get(key)) for key, _ in PPO_CURVES)]
    parts = [
        appended_note(run, "ppo/metrics.jsonl"),
        f"<p>{len(logged)} logged steps (last: {esc(fmt(logged[-1].get('step')))}).</p>",
        figure(plots.curves_figure(panels), "PPO training curves", "PPO training curves, per step."),
        kl_guard_note(run, logged),
        "<h3>Over-optimization</h3>",
    ]
    rm_key = next(
        (k for k in ("ppo/reward/raw", "ppo/reward/normalized", "ppo/reward/rm") if series(rows, k)[0]), None
    )
    gold_key = "ppo/reward/gold" if series(rows, "ppo/reward/gold")[0] else None
    if rm_key is None or not series(rows, "ppo/kl", rm_key)[0]:
        parts.append(
            missing("No KL and reward on the same steps in <code>ppo/metrics.jsonl</code>: nothing to plot.")
        )
    else:
        uri = plots.overoptimization_figure(rows, gold_key, rm_key)
        if gold_key:
            caption = (
                "Gold score (points, coloured by step) and reward-model reward (dashed, right axis) against "
                "the KL between the policy and its reference, each a running mean over steps. When the "
                "reward-model reward keeps rising while the gold score flattens or falls, the policy is "
                "exploiting the reward model rather than getting better."
            )
        else:
            caption = (
                "This run has no gold scorer (<code>ppo/reward/gold</code> was not logged), so only the "
                "reward-model reward is shown against the KL from the reference (running means, coloured "
                "by step); over-optimization cannot be read off it."
            )
        parts.append(figure(uri, "over-optimization: score against KL", caption))
    parts.append(stage_config(run, "ppo"))
    return "\n".join(parts)


def kl_guard_note(run: RunData, logged: list[dict[str, Any]]) -> str:
    """Whether PPO's runaway-KL guard fired, and at which steps (with their KL)."""
    summary = run.ppo_summary or {}
    flagged = summary.get("kl_flagged_steps")
    if not isinstance(flagged, list):  # no summary (a run cut short): the logged rows say it
        flagged = [row.get("step") for row in logged if row.get("ppo/kl_flagged")]
    limit = summary.get("kl_guard_limit")
    over = f"over {fmt(limit)} nats per completion" if is_number(limit) else "over its limit"
    if not flagged:
        return f'<p class="guard">KL guard: no step had a KL to the reference {over}.</p>'
    kl_at = {row.get("step"): row.get("ppo/kl") for row in logged}
    steps = ", ".join(
        f"{esc(fmt(s))} (KL {fmt(kl_at[s])})" if is_number(kl_at.get(s)) else esc(fmt(s)) for s in flagged
    )
    return (
        f'<p class="guard warn">KL guard: fired at {len(flagged)} step{"s" if len(flagged) > 1 else ""}, '
        f"the KL to the reference {over}: {steps}. The policy drifted where the reward model may not "
        "know the text (see the samples and the over-optimization plot).</p>"
    )


def evaluation_section(run: RunData) -> str:
    result = run.eval
    if result is None:
        return stage_missing(run, "eval", "eval.json", "Policy evaluation")
    parts = [
        f"<p>Policy <code>{esc(result.get('policy', '?'))}</code> against baseline "
        f"<code>{esc(result.get('baseline', '?'))}</code> on {esc(fmt(result.get('prompts')))} prompts.</p>"
    ]
    wins = result.get("win_rate")
    if isinstance(wins, dict) and wins:
        judge = result.get("headline")
        rows = []
        for name, w in wins.items():
            if not isinstance(w, dict):
                continue
            interval = f"[{percent(w.get('low'))}, {percent(w.get('high'))}]"
            label = f"{name} (headline)" if name == judge else name
            rows.append([label, percent(w.get("rate")), interval, w.get("wins"), w.get("ties"),
                         w.get("losses"), w.get("n")])  # fmt: skip
        parts.append("<h3>Win rate of the policy</h3>")
        parts.append(table(["judge", "win rate", "95% interval", "wins", "ties", "losses", "n"], rows))
        parts.append('<p class="note">A tie counts as half a win.</p>')
    before, after = as_dict(result.get("baseline_scores")), as_dict(result.get("policy_scores"))
    rows = [
        [name, mean_stderr(before.get(name)), mean_stderr(after.get(name))]
        for name in sorted({*before, *after})
    ]
    before, after = as_dict(result.get("baseline_length")), as_dict(result.get("policy_length"))
    if before or after:
        rows.append(["length (tokens)", fmt(before.get("mean")), fmt(after.get("mean"))])
    if rows:
        parts.append("<h3>Scores (mean ± standard error)</h3>")
        parts.append(table(["", "baseline (before)", "policy (after)"], rows))
    parts.append(metrics_table(result))
    kl = result.get("kl")
    if isinstance(kl, dict):
        parts.append(
            f"<p>KL from the reference <code>{esc(kl.get('reference', '?'))}</code>: "
            f"{esc(mean_stderr(kl.get('sequence')))} nats per answer, {esc(fmt(kl.get('per_token')))} per token.</p>"
        )
    return "\n".join(parts)


def metrics_table(result: dict[str, Any]) -> str:
    """The metric columns (ROUGE against references, classifier metrics): before, after, and the
    difference with its 95% interval; empty when the evaluation had none."""
    before, after = as_dict(result.get("baseline_metrics")), as_dict(result.get("policy_metrics"))
    differences = as_dict(result.get("metric_differences"))
    rows = []
    for name in after:
        d = as_dict(differences.get(name))
        interval = f"[{fmt(d.get('low'))}, {fmt(d.get('high'))}]" if d.get("low") is not None else "-"
        rows.append(
            [name, mean_stderr(before.get(name)), mean_stderr(after.get(name)), fmt(d.get("mean")), interval]
        )
    if not rows:
        return ""
    return "<h3>Metrics (mean ± standard error)</h3>\n" + table(
        ["", "baseline (before)", "policy (after)", "difference", "95% interval"], rows
    )


def scores_text(scores: Any) -> str:
    if not isinstance(scores, dict):
        return "-"
    return "\n".join(f"{name}: {fmt(value)}" for name, value in scores.items())


def samples_section(run: RunData) -> str:
    parts = ["<h3>Before and after (held-out prompts)</h3>"]
    if run.eval_samples is None:
        parts.append(stage_missing(run, "eval", "samples.jsonl", "Evaluation samples"))
    else:
        rows: list[list[Any]] = [
            [Text(r.get("prompt", "")), Text(r.get("baseline", "")), Text(scores_text(r.get("baseline_scores"))),
             Text(r.get("policy", "")), Text(scores_text(r.get("policy_scores")))]
            for r in run.eval_samples[:SAMPLE_ROWS]
        ]  # fmt: skip
        parts.append(
            f'<p class="note">The first {len(rows)} of {len(run.eval_samples)} rows of '
            "<code>eval/samples.jsonl</code>: the baseline's answer (before) and the policy's (after).</p>"
        )
        headers = ["prompt", "before (baseline)", "scores", "after (policy)", "scores"]
        parts.append(table(headers, rows, "samples", ["", "", "10em", "", "10em"]))
    parts.append("<h3>During PPO training</h3>")
    if run.ppo_samples is None:
        parts.append(stage_missing(run, "ppo", "samples.jsonl", "PPO samples"))
    else:
        parts.append(appended_note(run, "ppo/samples.jsonl"))
        chosen = first_and_last_step(run.ppo_samples, SAMPLE_ROWS // 2)
        rows = [
            [r.get("step"), Text(r.get("prompt", "")), Text(r.get("completion", "")), r.get("reward")]
            for r in chosen
        ]
        parts.append(
            f'<p class="note">{len(rows)} of {len(run.ppo_samples)} rows of <code>ppo/samples.jsonl</code>, '
            "from the first and the last step that logged samples.</p>"
        )
        parts.append(
            table(["step", "prompt", "completion", "reward"], rows, "samples", ["5em", "", "", "7em"])
        )
    return "\n".join(parts)


def first_and_last_step(rows: list[dict[str, Any]], per_step: int) -> list[dict[str, Any]]:
    """Up to `per_step` rows of the earliest logged step and as many of the latest one."""
    steps = [step for step in (r.get("step") for r in rows) if is_number(step)]
    if not steps:
        return rows[: 2 * per_step]
    first, last = min(steps), max(steps)
    chosen = [r for r in rows if r.get("step") == first][:per_step]
    if last != first:
        chosen += [r for r in rows if r.get("step") == last][:per_step]
    return chosen
