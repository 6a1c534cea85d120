"""The alignment tax: what each method's policy lost on what it was not trained for, against what it
gained on the task. InstructGPT named it (PPO lowered scores on public NLP tasks; PPO-ptx, which
mixes the pretraining objective into the updates, won most of them back).

Measured for the SFT model and every method's policy: the held-out language-modelling loss on text
no stage trained on (`rlhf.eval.lm_loss`) and any benchmark tasks (lm-evaluation-harness,
`rlhf.eval.tasks`). Set against the gains of the policy evaluation (`eval/comparison.json`), one
row per method: gold and reward gain over SFT, then the change of every loss and task metric.
A policy that is the SFT model itself (best-of-N) is measured once.
"""

from __future__ import annotations

from typing import Any

from rlhf.config.parts import ModelConfig, PromptConfig
from rlhf.eval.config import AlignmentTaxConfig

TAX_FILE = "tax.json"


def measure(
    policies: dict[str, str],
    cfg: AlignmentTaxConfig,
    *,
    prompt: PromptConfig,
    model: ModelConfig | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """name -> {path, lm_loss: {file: {loss, perplexity, tokens, data}}, tasks: {task: {metric:
    {value, stderr}}}} for every policy (`policies`: name -> model directory; the first is SFT;
    `model`: how they load, e.g. the SFT stage's settings, its path replaced by each)."""
    from rlhf.eval.config import EvalTasksConfig
    from rlhf.eval.lm_loss import lm_losses
    from rlhf.eval.tasks import evaluate_model, metrics_of, task_specs

    specs = task_specs(cfg.tasks) if cfg.tasks else []
    model = model or ModelConfig()
    tasks_cfg = EvalTasksConfig(
        limit=cfg.limit, num_fewshot=cfg.num_fewshot, batch_size=cfg.batch_size, model=model
    )
    done: dict[str, dict[str, Any]] = {}  # path -> its measures (best-of-N's policy is the SFT model)
    out: dict[str, Any] = {}
    for name, path in policies.items():
        if path not in done:
            measures: dict[str, Any] = {"lm_loss": {}, "tasks": {}}
            if cfg.texts:
                measures["lm_loss"] = lm_losses(
                    path,
                    cfg.texts,
                    model=model,
                    prompt=prompt,
                    max_length=cfg.max_length,
                    batch_size=cfg.batch_size,
                    device=device,
                )
            if specs:
                where = device or _default_device()
                measures["tasks"] = metrics_of(evaluate_model(tasks_cfg, path, specs, where))
            done[path] = measures
        out[name] = {"path": path, **done[path]}
    return {"texts": cfg.texts, "tasks": cfg.tasks, "policies": out}


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def tax_rows(tax: dict[str, Any], comparison: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per method: its gold and reward gain over SFT (`comparison`), and the change of each
    held-out loss (`loss <file>`: lower is better) and task metric (`<task> <metric>`) from SFT's."""
    policies = tax.get("policies") or {}
    scores = {n: p.get("scores") or {} for n, p in (comparison.get("policies") or {}).items()}
    sft = policies.get("sft")
    if not sft:
        return []

    def gain(name: str, judge: str) -> float | None:
        mine, base = (scores.get(name) or {}).get(judge) or {}, (scores.get("sft") or {}).get(judge) or {}
        if mine.get("mean") is None or base.get("mean") is None:
            return None
        return mine["mean"] - base["mean"]

    rows = []
    for name, measures in policies.items():
        if name == "sft":
            continue
        changes: dict[str, float | None] = {}
        for path, loss in (measures.get("lm_loss") or {}).items():
            base = (sft.get("lm_loss") or {}).get(path) or {}
            changes[f"loss {_short(path)}"] = loss["loss"] - base["loss"] if "loss" in base else None
        for task, metrics in (measures.get("tasks") or {}).items():
            for metric, stat in metrics.items():
                base = ((sft.get("tasks") or {}).get(task) or {}).get(metric) or {}
                changes[f"{task} {metric}"] = stat["value"] - base["value"] if "value" in base else None
        rows.append(
            {
                "method": name,
                "gold_gain": gain(name, "gold"),
                "reward_gain": gain(name, "reward"),
                "changes": changes,
            }
        )
    return rows


def _short(path: str) -> str:
    from pathlib import PurePath

    return PurePath(path).name


def tax_table(rows: list[dict[str, Any]], labels: dict[str, str] | None = None) -> str:
    """The rows as plain text: method, gains, then each change (a loss rising is a cost)."""
    if not rows:
        return ""
    columns = list(dict.fromkeys(c for row in rows for c in row["changes"]))
    header = ["method", "gold gain", "reward gain", *(f"Δ {c}" for c in columns)]

    def num(value: float | None) -> str:
        return "-" if value is None else f"{value:+.3f}"

    body = [
        [
            (labels or {}).get(r["method"], r["method"]),
            num(r["gold_gain"]),
            num(r["reward_gain"]),
            *(num(r["changes"].get(c)) for c in columns),
        ]
        for r in rows
    ]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    return "\n".join(
        "  ".join(f"{v:<{w}}" if i == 0 else f"{v:>{w}}" for i, (v, w) in enumerate(zip(line, widths)))
        for line in [header, *body]
    )
