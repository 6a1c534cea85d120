"""The `candidates` format: completions of a prompt with no judgment yet (what `rlhf generate` writes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlhf.config import DataConfig
from rlhf.data import (
    FORMATS,
    Candidates,
    DataError,
    Message,
    PromptOnly,
    Source,
    detect_format,
    inspect_data,
    load_records,
    prompts_of,
    record_to_dict,
)


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_detection_without_ranks_is_candidates_with_ranks_ranking():
    source = Source("x.jsonl", 1)
    assert detect_format({"prompt": "p", "completions": ["a"]}, source) == "candidates"
    assert detect_format({"prompt": "p", "completions": ["a"], "ranks": None}, source) == "candidates"
    assert detect_format({"prompt": "p", "completions": ["a", "b"], "ranks": [0, 1]}, source) == "ranking"
    assert detect_format({"prompt": "p", "completion": "a"}, source) == "prompt_completion"
    assert FORMATS["candidates"].kind == "candidates"


def test_rows_normalize_text_and_message_prompts(tmp_path):
    path = write_rows(
        tmp_path / "c.jsonl",
        [
            {"prompt": "Name a fruit.", "completions": ["An apple.", "A pear.", "An apple."], "rendered_prompt": "Q: Name a fruit.\nA:", "id": 3},
            {"prompt": [{"role": "human", "content": "Hi"}], "completions": ["", "Hello!"]},
        ],
    )  # fmt: skip
    data = load_records(path)
    assert (data.format, data.kind) == ("candidates", "candidates")
    first, second = data.records
    # Repeats and empty texts are real model outputs: kept, for people to see.
    assert first == Candidates(
        "Name a fruit.",
        ["An apple.", "A pear.", "An apple."],
        Source(str(path), 1),
        meta={"rendered_prompt": "Q: Name a fruit.\nA:", "id": 3},
    )
    assert second.prompt == (Message("user", "Hi"),) and second.completions == ["", "Hello!"]
    assert record_to_dict(first)["kind"] == "candidates"
    assert record_to_dict(second)["source"] == f"{path}:2"


@pytest.mark.parametrize(
    ("completions", "field", "message"),
    [
        ([], "completions", "expected a non-empty list of strings, got an empty list"),
        ("An apple.", "completions", "expected a non-empty list of strings, got a string ('An apple.')"),
        (["a", "b", 3], "completions[2]", "expected a string, got a number (3)"),
        (["a", None], "completions[1]", "expected a string, got null"),
    ],
)
def test_bad_completions_name_file_line_and_field(tmp_path, completions, field, message):
    path = write_rows(
        tmp_path / "c.jsonl",
        [{"prompt": "p", "completions": ["ok"]}, {"prompt": "p", "completions": completions}],
    )
    with pytest.raises(DataError) as err:
        load_records(path)
    assert str(err.value) == f"{path}:2: field `{field}`: {message}"


def test_bad_prompt_or_rendered_prompt(tmp_path):
    path = write_rows(tmp_path / "c.jsonl", [{"prompt": "p", "completions": ["a"], "rendered_prompt": 7}])
    with pytest.raises(
        DataError, match=r"c.jsonl:1: field `rendered_prompt`: expected a string, got a number"
    ):
        load_records(path)
    path = write_rows(tmp_path / "d.jsonl", [{"prompt": "", "completions": ["a"]}])
    with pytest.raises(DataError, match=r"d.jsonl:1: field `prompt`: expected a non-empty string"):
        load_records(DataConfig(path=str(path), format="candidates"))


def test_prompt_stages_take_candidates_and_reward_stages_do_not(tmp_path):
    path = write_rows(
        tmp_path / "c.jsonl",
        [{"prompt": "A?", "completions": ["x", "y"], "id": 1}, {"prompt": "B?", "completions": ["z"]}],
    )
    prompts = prompts_of(load_records(path, expect="prompt"))
    assert prompts == [
        PromptOnly("A?", Source(str(path), 1), meta={"id": 1}),
        PromptOnly("B?", Source(str(path), 2), meta={}),
    ]
    assert len(load_records(path, expect="candidates").records) == 2
    with pytest.raises(DataError, match="found candidates data .* but this stage expects reward data"):
        load_records(DataConfig(path=str(path)), expect="reward")


def test_inspect_counts_completions_and_repeats(tmp_path):
    path = write_rows(
        tmp_path / "c.jsonl",
        [{"prompt": "A?", "completions": ["x", "y", "x"]}, {"prompt": "B?", "completions": ["z"]}],
    )
    report = inspect_data(path)
    assert "format:   candidates (detected)" in report
    assert (
        "samples:  4 completions, 1 to 3 per prompt, 1 repeating an earlier one of the same prompt" in report
    )
    assert '"kind": "candidates"' in report
