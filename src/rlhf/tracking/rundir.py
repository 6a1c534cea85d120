"""The run directory: every run writes its resolved config and its environment there first."""

from __future__ import annotations

import json
import platform
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from rlhf.config.core import render_config, to_dict
from rlhf.files import write_text_atomic

PACKAGES = (
    "rlhf",
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "bitsandbytes",
    "datasets",
    "tokenizers",
    "safetensors",
    "numpy",
)


def environment_info(seed: int | None = None) -> dict[str, Any]:
    """Versions, platform, devices and seed: what is needed to reproduce or report a run."""
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    info: dict[str, Any] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "argv": sys.argv,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": versions,
        "seed": seed,
    }
    try:
        import torch

        info["cuda_available"] = torch.cuda.is_available()
        info["devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info["cpu_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return info


def prepare_run_dir(
    output_dir: str | Path, config: Any, *, seed: int | None = None, main: bool = True
) -> Path:
    """Create the run directory and write `config.yaml` (with docs) and `environment.json` into it.

    `config.yaml` is the resolved config: feed it back with `--config` to repeat the run.
    Only the main process writes; every process gets the path.
    """
    run_dir = Path(output_dir)
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run_dir / "config.yaml", render_config(config) + "\n")
        write_text_atomic(run_dir / "config.json", json.dumps(to_dict(config), indent=2) + "\n")
        write_text_atomic(run_dir / "environment.json", json.dumps(environment_info(seed), indent=2) + "\n")
    return run_dir
