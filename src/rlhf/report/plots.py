"""The report's figures, drawn with matplotlib and returned as `data:image/png` URIs.

Figures are built with `matplotlib.figure.Figure` and the Agg canvas directly, never through
pyplot: nothing is registered in pyplot's global list of open figures, so nothing leaks and no
GUI backend is ever touched. matplotlib is imported inside the functions (it costs a second).
"""

from __future__ import annotations

import base64
import io
import math
from typing import Any

from rlhf.report.load import is_number, running_mean, series, smoothing_window

DPI = 100
# A curve with more points than this is drawn faint with its running mean on top.
SMOOTH_ABOVE = 30

Curve = tuple[str, list[float], list[float]]  # (label, steps, values)
Panel = tuple[str, list[Curve]]  # (title, curves drawn on the same axes)


def new_figure(width: float, height: float, **kwargs: Any):
    """A Figure on the Agg canvas, with constrained layout (keeps labels and colour bars apart)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained", **kwargs)
    FigureCanvasAgg(fig)
    return fig


def to_data_uri(fig) -> str:
    """The figure as a base64 PNG `data:` URI; the figure is cleared afterwards (it is done with)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    fig.clear()
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def curves_figure(panels: list[Panel], columns: int = 3) -> str:
    """A grid of small training-curve panels, one per title; returns the PNG data URI."""
    columns = min(columns, len(panels))
    rows = math.ceil(len(panels) / columns)
    fig = new_figure(4.0 * columns, 2.8 * rows)
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax, (title, curves) in zip(axes.flat, panels):
        for index, (label, steps, values) in enumerate(curves):
            color = f"C{index}"
            if len(values) > SMOOTH_ABOVE:
                window = smoothing_window(len(values))
                ax.plot(steps, values, color=color, alpha=0.3, linewidth=1)
                ax.plot(steps, running_mean(values, window), color=color, linewidth=1.8, label=label)
            else:
                ax.plot(steps, values, color=color, marker="o", markersize=3, linewidth=1.5, label=label)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if len(curves) > 1:
            ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    return to_data_uri(fig)


def reliability_figure(bins: list[dict[str, Any]], ece: float | None, histogram: dict | None) -> str:
    """Reliability diagram of a reward model: predicted P(preferred is right) against how often it
    was, one point per bin, area by the bin's pairs; the diagonal is perfect calibration. With the
    reward histogram of `rlhf eval reward`, a second panel shows the reward distribution."""
    keys = ("count", "predicted", "observed")
    used = [
        b for b in bins if isinstance(b, dict) and all(is_number(b.get(k)) for k in keys) and b["count"] > 0
    ]
    fig = new_figure(9.0 if histogram else 5.0, 4.2)
    axes = fig.subplots(1, 2 if histogram else 1, squeeze=False)[0]
    ax = axes[0]
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect calibration")
    if used:
        counts = [b["count"] for b in used]
        sizes = [20 + 400 * c / max(counts) for c in counts]
        predicted = [b["predicted"] for b in used]
        observed = [b["observed"] for b in used]
        ax.plot(predicted, observed, color="C0", linewidth=1)
        ax.scatter(
            predicted, observed, s=sizes, color="C0", alpha=0.6, edgecolor="C0", label="bins (area: pairs)"
        )
        low = min(0.5, *predicted, *observed)
        ax.set_xlim(low - 0.02, 1.02)
        ax.set_ylim(low - 0.02, 1.02)
    title = "reliability" + (f" (ECE {ece:.3f})" if is_number(ece) else "")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("predicted P(preferred wins)", fontsize=9)
    ax.set_ylabel("observed frequency", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    if histogram:
        edges, counts = histogram["edges"], histogram["counts"]
        widths = [b - a for a, b in zip(edges[:-1], edges[1:])]
        axes[1].bar(edges[:-1], counts, width=widths, align="edge", color="C2", edgecolor="white")
        axes[1].set_title("reward distribution (held-out completions)", fontsize=10)
        axes[1].set_xlabel("reward", fontsize=9)
        axes[1].set_ylabel("completions", fontsize=9)
        axes[1].grid(alpha=0.3)
    return to_data_uri(fig)


def overoptimization_figure(rows: list[dict[str, Any]], gold_key: str | None, rm_key: str) -> str:
    """Gold score (left axis) and reward-model reward (right axis) against KL from the reference,
    across PPO training. Each is a running mean over steps, and the points are coloured by step.
    Without a gold key, the reward-model reward alone against KL."""
    fig = new_figure(7.5, 4.5)
    ax = fig.subplots()
    if gold_key:
        steps, kl, gold, reward = series(rows, "ppo/kl", gold_key, rm_key)
    else:
        steps, kl, reward = series(rows, "ppo/kl", rm_key)
        gold = None
    window = smoothing_window(len(steps))
    kl_mean = running_mean(kl, window)
    main = running_mean(gold if gold is not None else reward, window)
    label = "gold score" if gold is not None else f"reward model ({rm_key})"
    ax.plot(kl_mean, main, color="grey", linewidth=1, alpha=0.6)
    points = ax.scatter(kl_mean, main, c=steps, cmap="viridis", s=22, zorder=3, label=label)
    ax.set_xlabel(f"KL from the reference (ppo/kl, running mean of {window} steps)", fontsize=9)
    ax.set_ylabel(label, fontsize=9)
    ax.grid(alpha=0.3)
    handles = [points]
    if gold is not None:
        twin = ax.twinx()
        (line,) = twin.plot(
            kl_mean, running_mean(reward, window), color="C3", linestyle="--", linewidth=1.5,
            label=f"reward model ({rm_key})",
        )  # fmt: skip
        twin.set_ylabel(f"reward model ({rm_key})", fontsize=9, color="C3")
        twin.tick_params(axis="y", colors="C3")
        handles.append(line)
        ax.set_title("over-optimization: gold score and reward-model reward against KL", fontsize=10)
    else:
        ax.set_title("reward-model reward against KL (no gold scorer in this run)", fontsize=10)
    fig.legend(
        handles=handles,
        labels=[h.get_label() for h in handles],
        fontsize=8,
        loc="outside lower center",
        ncols=2,
    )
    fig.colorbar(points, ax=ax, label="PPO step", pad=0.1 if gold is not None else 0.02)
    return to_data_uri(fig)


def methods_figure(points: dict[str, list[tuple[str, float, float, float | None]]]) -> str:
    """Each policy's mean score (± standard error) against its KL from the SFT model, one panel per
    judge: `points[judge]` lists (label, kl, mean, stderr)."""
    judges = list(points)
    fig = new_figure(5.0 * len(judges), 3.8)
    axes = fig.subplots(1, len(judges), squeeze=False)[0]
    for ax, judge in zip(axes, judges):
        for index, (label, kl, mean, stderr) in enumerate(points[judge]):
            ax.errorbar(
                [kl], [mean], yerr=[stderr or 0.0], fmt="o", color=f"C{index}", capsize=3, label=label
            )
            ax.annotate(label, (kl, mean), textcoords="offset points", xytext=(6, 4), fontsize=8)
        ax.set_xlabel("KL from the SFT model (nats per answer)", fontsize=9)
        ax.set_ylabel(f"{judge} score (mean ± s.e.)", fontsize=9)
        ax.set_title(f"{judge} score against KL", fontsize=10)
        ax.grid(alpha=0.3)
    return to_data_uri(fig)
