"""The README's example of the whole loop, run as a user pastes it: every command of its bash block
in order, with the labeling step (`rlhf label serve`, where a person picks the better answer of each
pair in the browser) done through the app's own store instead, by a rule: the answer with more
`e`s wins. Each command must succeed, and the loop must leave a report."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rlhf.label.store import Store

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def readme_commands() -> list[str]:
    """The commands of the README's loop block, continuation lines joined, comments dropped."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"\[start:loop\] -->\n```bash\n(.*?)```", text, re.S).group(1)
    joined = block.replace("\\\n", " ")
    commands = []
    for line in joined.splitlines():
        line = line.split("  #")[0].strip()
        if line and not line.startswith("#"):
            commands.append(line)
    return commands


def label_by_rule(project: Path) -> int:
    """What a person does in the labeling app: judge every pair (here: more `e`s is better)."""
    store = Store(project)
    token = store.add_annotator("reader")
    user = store.authenticate(token)
    judged = 0
    while (assignment := store.next_assignment(user.id)) is not None:
        shown = [assignment.item.completions[i] for i in assignment.order]
        store.submit(
            user.id,
            assignment.item.id,
            {"pairwise": "A" if shown[0].count("e") >= shown[1].count("e") else "B"},
        )
        judged += 1
    return judged


@pytest.mark.slow
def test_the_readmes_loop_runs_as_written(tmp_path):
    commands = readme_commands()
    assert commands[0].startswith("source .venv/bin/activate") and commands[-2] == "rlhf report runs/loop"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    ran = []
    for command in commands[1:]:
        command = command.replace("src/rlhf/assets", str(ROOT / "src" / "rlhf" / "assets"))
        command = command.replace("examples/", f"{ROOT / 'examples'}/")
        if command.startswith("rlhf label serve"):
            assert label_by_rule(tmp_path / "runs" / "loop" / "label") >= 20
            continue
        if command.startswith("DEMOS="):
            name, value = command.split("=", 1)
            env[name] = value
            continue
        proc = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=900)  # fmt: skip
        assert proc.returncode == 0, f"{command}\n{proc.stderr[-3000:]}"
        ran.append(command.split()[1])
    assert ran == ["sft", "generate", "label", "label", "reward", "ppo", "eval", "report", "eval"]
    assert (tmp_path / "runs" / "loop" / "report.html").is_file()
    assert (
        "rouge1"
        in json.loads((tmp_path / "runs" / "loop" / "eval" / "eval.json").read_text())["policy_metrics"]
    )
    # The cost: the local task and the held-out loss, SFT and PPO side by side.
    rows = json.loads((tmp_path / "runs" / "loop" / "tasks" / "tasks.json").read_text())["rows"]
    assert [(r["task"], r["metric"]) for r in rows] == [
        ("held-out loss", "stories_text.jsonl"),
        ("stories_next_word", "acc"),
    ]
    assert all(set(r["models"]) == {"sft", "ppo"} and r["difference"]["ppo"] is not None for r in rows)
