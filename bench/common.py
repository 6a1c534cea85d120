"""What the benchmarks share: a probe of the training loop (step times, counts, memory) that watches
the loop through `rlhf.training.loop.watch_steps` (no stage is changed or patched to time it), and
the machine a result was measured on.

    probe = PairProbe(count=sequence_counts)
    with watch_steps(probe):
        run_dpo(cfg)
    probe.report(skip=3)
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import platform
import re
import resource
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import torch


def _status_mib(key: str) -> float:
    return int(re.search(rf"{key}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) / 1024


class Probe:
    """Step timestamps, real tokens per step, and the memory peak of the training loop alone. As a
    step watcher (`watch_steps`) it starts, counts each step with `count(window)` and ends with the
    loop; the TRL side calls `start`, `step` and `end` from a trainer callback."""

    def __init__(self, count: Callable[[list[Any]], Any] | None = None) -> None:
        self.cuda = torch.cuda.is_available()
        self.times: list[float] = []
        self.tokens: list[int] = []  # real (non-pad) tokens of each optimizer step
        self.memory: dict[str, float] = {}
        self.count = count
        """What a step counted, from its micro-batches (tokens, or the `step` arguments as a tuple)."""

    def started(self) -> None:
        self.start()

    def stepped(self, step: int, row: dict[str, float], window: list[Any]) -> None:
        counted = self.count(window) if self.count is not None else 0
        self.step(*counted) if isinstance(counted, tuple) else self.step(counted)

    def ended(self) -> None:
        self.end()

    def start(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            self.memory["before_mib"] = torch.cuda.memory_allocated() / 2**20
        else:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (peak RSS) to the current RSS
            self.memory["before_mib"] = _status_mib("VmRSS")
        self.cpu, self.load = time.process_time(), [os.getloadavg()[0]]
        self.step(None)

    def step(self, tokens: int | None) -> None:
        if self.cuda:
            torch.cuda.synchronize()
        self.times.append(time.perf_counter())
        if tokens is not None:
            self.tokens.append(tokens)

    def end(self) -> None:
        peak = torch.cuda.max_memory_allocated() / 2**20 if self.cuda else _status_mib("VmHWM")
        self.memory.update(peak_mib=peak, growth_mib=peak - self.memory["before_mib"])
        self.memory["process_peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        self.cpu, self.load = time.process_time() - self.cpu, self.load + [os.getloadavg()[0]]

    def report(self, skip: int, **extra) -> dict:
        t, steps, tokens = self.times, len(self.tokens), sum(self.tokens)
        skip = min(skip, steps - 1)
        return {
            "steps": steps, "tokens": tokens, "seconds": t[-1] - t[0],
            "tokens_per_s": tokens / (t[-1] - t[0]),
            "steady_tokens_per_s": sum(self.tokens[skip:]) / (t[-1] - t[skip]),
            "steady_steps_per_s": (steps - skip) / (t[-1] - t[skip]),
            "first_step_s": t[1] - t[0], "memory": self.memory, **extra,
            # CPU seconds per wall second of the loop (about the thread count when nothing else runs)
            # and the 1-minute load average before and after: signs of a disturbed run.
            "cpu_per_wall": self.cpu / (t[-1] - t[0]), "load_average": self.load,
            "threads": torch.get_num_threads(),
        }  # fmt: skip


class PairProbe(Probe):
    """The SFT probe, also counting the pairs and the padded positions (N x T) of every step."""

    def __init__(self, count: Callable[[list[Any]], Any] | None = None) -> None:
        super().__init__(count)
        self.pairs: list[int] = []
        self.padded: list[int] = []

    def step(self, tokens: int | None, pairs: int = 0, padded: int = 0) -> None:
        super().step(tokens)
        if tokens is not None:
            self.pairs.append(pairs)
            self.padded.append(padded)

    def report(self, skip: int, **extra) -> dict:
        out = super().report(skip, **extra)
        t, skip = self.times, min(skip, len(self.pairs) - 1)
        return out | {
            "pairs": sum(self.pairs), "padded_tokens": sum(self.padded),
            "pairs_per_s": sum(self.pairs) / (t[-1] - t[0]),
            "steady_pairs_per_s": sum(self.pairs[skip:]) / (t[-1] - t[skip]),
            "step_seconds": [round(b - a, 4) for a, b in zip(t, t[1:])],
        }  # fmt: skip


def sequence_counts(window: list[Any]) -> tuple[int, int, int]:
    """(real tokens, padded positions, pairs) of a step's micro-batches of completions
    (`rlhf.preference.sequences.SequenceBatch`: DPO, the reward model)."""
    tokens = sum(int(batch.lengths.sum()) for batch in window)
    padded = sum(batch.input_ids.numel() for batch in window)
    pairs = sum(len(batch.layout.pairs) for batch in window)
    return tokens, padded, pairs


def machine() -> dict:
    """The device, library versions, Python and date. TRL's version when this environment has it
    (bench/ppo_vs_trl.py runs TRL in an environment of its own and fills it in itself)."""
    import transformers

    if torch.cuda.is_available():
        device = torch.cuda.get_device_name(0)
    else:
        names = re.findall(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        device = f"{names[0] if names else platform.processor()}, {len(names)} cores (CPU)"
    trl_version = (
        importlib.metadata.version("trl") if importlib.util.find_spec("trl") else "not installed here"
    )
    versions = {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl_version}
    return {
        "device": device,
        **versions,
        "python": platform.python_version(),
        "date": date.today().isoformat(),
    }


def demo_seeds_parser(description: str, out: str) -> argparse.ArgumentParser:
    """The arguments of a benchmark that runs the demo over task seeds: `--seeds` (default 0 1) and
    `--out` (its runs' folder); the caller adds its own."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out", type=Path, default=Path(out))
    return parser
