"""`rlhf eval tasks`: benchmark tasks through EleutherAI's lm-evaluation-harness, several models side
by side in one table with each one's difference from the first.

Each model is loaded by rlhf's own loader (`load_lm`: decoder-only or encoder-decoder, adapters on
their base with LoRA merged) and handed to the harness's Hugging Face wrapper (`HFLM`) as a model
object, so a run's policy, an SFT adapter and a hub id are scored alike. Local task files (the
harness's task YAML over local data) run offline: their relative paths are read from the file's own
folder (`local_task`).

With `texts`, each model's held-out language-modelling loss on those files joins the table (rows
`held-out loss <file>`, nats per token: lower is better; `rlhf.eval.lm_loss`).

Writes `<output_dir>/tasks.json` (every model's metrics and the differences) and, per model,
`<name>/results.json` (the harness's results) and `<name>/samples_<task>.jsonl` (each request and
the model's answer: per-choice log-likelihoods for multiple choice).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rlhf.config.core import ConfigError
from rlhf.eval.config import EvalTasksConfig

TASK_SUFFIXES = (".yaml", ".yml")
LOSS_ROW = "held-out loss"
"""The table's `task` for the language-modelling loss on `texts` (its metric: the file's name)."""


def resolve_model(path: str) -> tuple[str, str]:
    """(the directory or hub id to load, the name it gets in the table): a run directory (no
    weights of its own, a `policy/` or `model/` inside that has them) stands for its final model."""
    here = Path(path)
    if not here.is_dir():
        return path, path.rstrip("/").rsplit("/", 1)[-1]
    if _holds_model(here):
        return path, here.resolve().name
    for inner in ("policy", "model"):
        if _holds_model(here / inner):
            return str(here / inner), here.resolve().name
    raise ConfigError(f"{path} holds no model (no weights or adapter, no policy/ or model/ with them)")


def _holds_model(folder: Path) -> bool:
    """Whether `folder` holds model weights or an adapter (not just a run's own config.json)."""
    patterns = ("adapter_config.json", "*.safetensors", "*.bin", "*.safetensors.index.json")
    return folder.is_dir() and any(next(folder.glob(pattern), None) is not None for pattern in patterns)


def local_task(path: Path) -> dict[str, Any]:
    """A task YAML file as the harness's task config, its relative data paths made absolute from
    the file's folder (the harness would read them from the working directory). Read by the
    harness's own YAML loader (`!function` and `include` as in its task folders): the one private
    function used here, pinned with lm-eval."""
    from lm_eval.tasks._yaml_loader import load_yaml

    config = load_yaml(path)
    if "task" not in config:
        raise ConfigError(f"{path}: a task file names its task (`task: <name>`)")
    kwargs = config.get("dataset_kwargs") or {}
    files = kwargs.get("data_files")
    if files is not None:
        kwargs["data_files"] = _under(files, path.parent)
    local = path.parent / str(config.get("dataset_path", ""))
    if config.get("dataset_path") and not Path(config["dataset_path"]).is_absolute() and local.exists():
        config["dataset_path"] = str(local)
    return config


def _under(files: Any, folder: Path) -> Any:
    """`data_files` (a path, a list, or split -> path or list) with relative paths under `folder`."""
    if isinstance(files, dict):
        return {split: _under(value, folder) for split, value in files.items()}
    if isinstance(files, list):
        return [_under(value, folder) for value in files]
    return str(folder / files) if not Path(str(files)).is_absolute() else files


def task_specs(names: list[str]) -> list[str | dict[str, Any]]:
    """What the harness is asked to run: registry names as they are (an unknown one refused in a
    line, before any model loads), local files as their configs."""
    specs: list[str | dict[str, Any]] = []
    for name in names:
        if name.endswith(TASK_SUFFIXES):
            if not Path(name).is_file():
                raise ConfigError(f"task file {name} does not exist")
            specs.append(local_task(Path(name)))
        else:
            specs.append(name)
    registered = [s for s in specs if isinstance(s, str)]
    if registered:
        _check_registered(registered)
    return specs


def _check_registered(names: list[str]) -> None:
    """Each name is a task, group or tag of the harness's registry."""
    import difflib

    from lm_eval.tasks import TaskManager

    known = TaskManager().all_tasks
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(
                f"task `{name}` is not in lm-evaluation-harness's registry{hint} (a local task file ends in .yaml)"
            )


def harness_model(cfg: EvalTasksConfig, path: str, device: str) -> Any:
    """The harness's `HFLM` around the model at `path`, loaded by rlhf (a LoRA adapter merged into
    its base, or kept as an adapter on a quantized base)."""
    import dataclasses

    from lm_eval.models.huggingface import HFLM

    from rlhf.models import load_lm, load_tokenizer
    from rlhf.models.adapters import find_peft_model, merge_adapters
    from rlhf.models.load import kind_of

    model_cfg = dataclasses.replace(cfg.model, path=path)
    tokenizer = load_tokenizer(model_cfg)
    model = load_lm(model_cfg, for_training=False, tokenizer=tokenizer)
    if find_peft_model(model) is not None:
        if model.active_peft_config.is_prompt_learning:
            raise ConfigError(
                f"{path} is a prompt-tuning adapter: its soft prompt shifts every position the harness reads; "
                "evaluate a LoRA adapter or a full model"
            )
        if model_cfg.quantization == "none":  # a 4/8-bit base would round the merged weights
            model = merge_adapters(model)
    backend = (
        "seq2seq" if kind_of(path, trust_remote_code=cfg.model.trust_remote_code) == "seq2seq" else "causal"
    )
    return HFLM(
        pretrained=model.to(device),
        tokenizer=tokenizer,
        backend=backend,
        batch_size=cfg.batch_size,
        device=device,
    )


def evaluate_model(cfg: EvalTasksConfig, path: str, specs: list, device: str) -> dict[str, Any]:
    """The harness's results for one model (its `results`, `higher_is_better`, `n-samples`, ...,
    and `samples`: every request with the model's answer)."""
    from lm_eval import simple_evaluate

    result = simple_evaluate(
        model=harness_model(cfg, path, device),
        tasks=specs,
        num_fewshot=cfg.num_fewshot,
        limit=cfg.limit,
        log_samples=True,
        random_seed=cfg.seed,
        numpy_random_seed=cfg.seed,
        torch_random_seed=cfg.seed,
        fewshot_random_seed=cfg.seed,
    )
    if result is None:  # a non-zero rank of a distributed run; this command runs one process
        raise RuntimeError("lm-evaluation-harness returned no results")
    return dict(result)


def metrics_of(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """task -> metric -> {value, stderr} from the harness's `results` (metric keys are
    `name,filter`; the filter is kept in the name when it is not `none`)."""
    out: dict[str, dict[str, Any]] = {}
    for task, values in (result.get("results") or {}).items():
        for key, value in values.items():
            if "," not in key or "_stderr," in key or not isinstance(value, int | float):
                continue
            name, filt = key.split(",", 1)
            stderr = values.get(f"{name}_stderr,{filt}")
            label = name if filt == "none" else f"{name} ({filt})"
            out.setdefault(task, {})[label] = {
                "value": float(value),
                "stderr": float(stderr) if isinstance(stderr, int | float) else None,
            }
    return out


def held_out_losses(cfg: EvalTasksConfig, path: str, device: str) -> dict[str, dict[str, Any]]:
    """`held-out loss` -> file name -> {value: nats per token, stderr: None, perplexity, tokens}."""
    if not cfg.texts:
        return {}
    from rlhf.eval.lm_loss import lm_losses

    losses = lm_losses(
        path,
        cfg.texts,
        model=cfg.model,
        prompt=cfg.prompt,
        max_length=cfg.max_length,
        batch_size=cfg.batch_size,
        device=device,
    )
    return {
        LOSS_ROW: {
            Path(file).name: {
                "value": v["loss"],
                "stderr": None,
                "perplexity": v["perplexity"],
                "tokens": v["tokens"],
            }
            for file, v in losses.items()
        }
    }


def side_by_side(models: dict[str, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per (task, metric) any model has: each model's value and stderr, and each later
    model's difference from the first."""
    names = list(models)
    keys = dict.fromkeys((task, metric) for m in models.values() for task in m for metric in m[task])
    rows = []
    for task, metric in keys:
        cells = {n: models[n].get(task, {}).get(metric) for n in names}
        first = cells[names[0]]
        differences = {
            n: (cell["value"] - first["value"]) if cell and first else None
            for n, cell in cells.items()
            if n != names[0]
        }
        rows.append({"task": task, "metric": metric, "models": cells, "difference": differences})
    return rows


def table_text(rows: list[dict[str, Any]], names: list[str]) -> str:
    """The rows as a plain table: task, metric, each model's value (± stderr), then the difference
    of each later model from the first."""

    def cell(stat: dict[str, Any] | None) -> str:
        if not stat:
            return "-"
        stderr = f" ± {stat['stderr']:.3f}" if stat.get("stderr") is not None else ""
        return f"{stat['value']:.3f}{stderr}"

    header = ["task", "metric", *names, *(f"{n} - {names[0]}" for n in names[1:])]
    body = [
        [
            row["task"],
            row["metric"],
            *(cell(row["models"][n]) for n in names),
            *("-" if row["difference"][n] is None else f"{row['difference'][n]:+.3f}" for n in names[1:]),
        ]
        for row in rows
    ]
    widths = [max(len(str(line[i])) for line in [header, *body]) for i in range(len(header))]
    lines = [
        "  ".join(f"{v:<{w}}" if i < 2 else f"{v:>{w}}" for i, (v, w) in enumerate(zip(line, widths)))
        for line in [header, *body]
    ]
    return "\n".join(lines)


def _names(cfg: EvalTasksConfig, resolved: list[tuple[str, str]]) -> list[str]:
    """The table's model names: `names`, else each model's own, numbered where two are alike."""
    if cfg.names is not None:
        return list(cfg.names)
    names: list[str] = []
    for _, name in resolved:
        names.append(name if name not in names else f"{name}-{len(names) + 1}")
    return names


def _write_model(out: Path, result: dict[str, Any]) -> None:
    """The harness's results (JSON-safe: functions in task configs written as text) and samples."""
    out.mkdir(parents=True, exist_ok=True)
    samples = result.pop("samples", {}) or {}
    (out / "results.json").write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    for task, rows in samples.items():
        with (out / f"samples_{task}.jsonl").open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, default=str, ensure_ascii=False) + "\n")


def run_eval_tasks(cfg: EvalTasksConfig) -> dict[str, Any]:
    """Run every task on every model; print and write the side-by-side table; return it as data."""
    import torch

    if not cfg.models:
        raise ConfigError("no models given: `rlhf eval tasks MODEL [MODEL ...] --tasks ...`")
    if not cfg.tasks and not cfg.texts:
        raise ConfigError("no tasks given: `--tasks name,path/to/task.yaml` (or `--texts FILE,...`)")
    started = time.time()
    specs = task_specs(cfg.tasks) if cfg.tasks else []  # local files read before any model loads
    resolved = [resolve_model(path) for path in cfg.models]
    names = _names(cfg, resolved)
    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    out = Path(cfg.output_dir)
    models: dict[str, dict[str, dict[str, Any]]] = {}
    for (path, _), name in zip(resolved, names):
        print(f"[eval tasks] {name}: {path}")
        models[name] = held_out_losses(cfg, path, device)
        if specs:
            result = evaluate_model(cfg, path, specs, device)
            models[name].update(metrics_of(result))
            _write_model(out / name, result)
    rows = side_by_side(models)
    summary = {
        "models": dict(zip(names, (p for p, _ in resolved))),
        "tasks": cfg.tasks,
        "limit": cfg.limit,
        "num_fewshot": cfg.num_fewshot,
        "rows": rows,
        "seconds": round(time.time() - started, 1),
    }
    (out / "tasks.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(table_text(rows, names))
    print(f"[eval tasks] wrote {out / 'tasks.json'} and each model's results in {summary['seconds']} s")
    return summary
