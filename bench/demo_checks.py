"""The sweep table of a folder of finished demo seeds, with each run's checks (`rlhf.demo.checks`:
SFT's greedy answers, the reward model on one fact swapped or left out) computed where missing, as
for runs made before `rlhf demo` ran them itself.

    .venv/bin/python bench/demo_checks.py runs/demo-seeds [--seeds 0 1 ...]

Reads `<dir>/seed-<s>` (default: every finished one), prints what `rlhf demo --seeds N` prints and
writes `<dir>/seeds.json`.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from demo_ppo_kl import load_run

from rlhf.demo.checks import run_checks
from rlhf.demo.sweep import SEEDS_FILE, aggregate, sweep_table


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dir", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+")
    args = parser.parse_args()
    folder = args.dir.resolve()
    found = sorted(int(p.name.removeprefix("seed-")) for p in folder.glob("seed-*"))
    seeds = [s for s in args.seeds or found if (folder / f"seed-{s}" / "summary.json").is_file()]
    here = Path.cwd()
    for seed in seeds:
        cfg, root = load_run(folder / f"seed-{seed}")
        os.chdir(root)  # the run's config names its files relative to where the demo ran
        run_checks(cfg)
        os.chdir(here)
    result = aggregate({s: folder / f"seed-{s}" for s in seeds})
    (folder / SEEDS_FILE).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(sweep_table(result))


if __name__ == "__main__":
    main()
