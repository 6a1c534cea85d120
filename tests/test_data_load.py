"""`load_records` options (limit, expect), `load_prompts`, and the `rlhf data inspect` text."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rlhf.config import DataConfig
from rlhf.data import DataError, Message, PromptOnly, inspect_data, load_prompts, load_records


@pytest.fixture()
def data_dir(fixtures_dir: Path) -> Path:
    return fixtures_dir / "data"


def test_limit_counts_records(data_dir, shared_dir):
    data = load_records(DataConfig(path=str(data_dir / "pairwise.jsonl"), limit=2))
    assert [r.prompt for r in data.records] == ["Best pet?", "Sky colour?"]
    assert (data.report.rows_read, data.report.records_kept) == (2, 2)
    # One tree gives several rankings; the limit cuts records, not rows.
    trees = load_records(DataConfig(path=str(shared_dir / "data" / "oasst_en_100_tree.jsonl"), limit=5))
    assert len(trees.records) == 5


def test_load_prompts_from_any_format(data_dir):
    prompts = load_prompts(data_dir / "pairwise.jsonl")
    assert [p.prompt for p in prompts] == ["Best pet?", "Sky colour?", "Two plus two?"]
    assert all(isinstance(p, PromptOnly) for p in prompts)
    assert prompts[2].meta == {"annotator": "b7"}
    trees = load_prompts(data_dir / "oasst_small.jsonl")
    assert len(trees) == 4
    assert trees[1].prompt == (Message("user", "Root question"), Message("assistant", "Answer one"))
    assert [p.prompt for p in load_prompts(data_dir / "prompts.jsonl")][0] == "Tell me a story."
    with pytest.raises(DataError, match="format `text` has no prompts"):
        load_prompts(data_dir / "text.jsonl")


def test_no_path_given():
    with pytest.raises(DataError, match=r"no data given: set `data.path`"):
        load_records(DataConfig())


def test_inspect_rankings(data_dir):
    text = inspect_data(data_dir / "oasst_small.jsonl")
    lines = text.splitlines()
    assert (
        lines[1]
        == "format:   oasst (detected): OpenAssistant message trees; each group of ranked sibling replies is one ranking"
    )
    assert lines[2] == "kind:     ranking"
    assert lines[3] == "rows:     2 read, 0 skipped"
    assert lines[4] == "records:  4"
    # completions 2 + 2 + 2 + 2; one ordered pair per ranking
    assert lines[5] == "ranked:   8 completions, 4 ordered pairs"
    assert "left out: 2 deleted messages, with their replies (oasst)" in lines
    assert "left out: 2 unranked replies next to ranked siblings (oasst)" in lines
    start = lines.index(f"example ({data_dir / 'oasst_small.jsonl'}:1):")
    example = json.loads("\n".join(lines[start + 1 :]))
    assert example["kind"] == "ranking"
    assert example["completions"] == ["Answer one", "Answer two"]
    assert example["prompt"] == [{"role": "user", "content": "Root question"}]


def test_inspect_lists_skipped_rows(tmp_path):
    path = tmp_path / "pairs.jsonl"
    rows = [{"prompt": "p", "chosen": "a", "rejected": "b"}, {"prompt": "p", "chosen": "a", "rejected": "a"}]
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    text = inspect_data(path)
    assert "rows:     2 read, 1 skipped" in text
    assert "skipped rows (lines 2):" in text
    assert f"  {path}:2: field `rejected`: identical to `chosen`" in text


def test_inspect_overrides_and_long_text(tmp_path):
    path = tmp_path / "rated.jsonl"
    path.write_text(json.dumps({"prompt": "p", "completion": "x" * 1000, "rating": 9}) + "\n")
    text = inspect_data(path, rating_scale=[0, 10])
    assert "format:   rating (detected)" in text
    assert "... [600 more characters]" in text
    text = inspect_data(path, format="prompts")
    assert "format:   prompts (given)" in text


@pytest.mark.slow
def test_importing_the_package_stays_light():
    # `rlhf --help` imports rlhf.data; the heavy libraries must wait until a function needs them.
    code = "import sys, rlhf.data; print(sorted(m for m in ('torch', 'datasets', 'pyarrow', 'transformers') if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"
