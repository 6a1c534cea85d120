"""Texts that lie: what a reader sees decides whether two completions are the same answer."""

from __future__ import annotations

import json

from rlhf.data.text import invisible_characters, seen_as


def test_seen_as_removes_what_no_reader_sees_and_normalizes_the_rest():
    assert seen_as("B") == seen_as("B\u200b") == seen_as(" B\n") == "B"  # zero-width space, edges
    assert seen_as("caf\u00e9") == seen_as("cafe\u0301")  # composed and decomposed accent
    assert seen_as("a  \t b") == "a b"
    assert seen_as("\u202eevil\u202c") == "evil"  # a right-to-left override and its pop
    assert seen_as("a b") != seen_as("ab")  # a space a reader sees is kept


def test_invisible_characters_are_listed_once_in_order():
    assert invisible_characters("x\u202ey\u200bz\u202e") == ["\u202e", "\u200b"]
    assert invisible_characters("plain text, é") == []


def test_a_labeling_project_leaves_out_pairs_a_reader_cannot_tell_apart(tmp_path):
    """`B` and `B` + U+200B used to be two completions to compare."""
    from rlhf.label.project import read_tasks
    from rlhf.label.tasks import ProjectConfig

    tasks = tmp_path / "tasks.jsonl"
    rows = [{"prompt": "p", "completions": ["B", "B\u200b", "C"]}]
    tasks.write_text("".join(json.dumps(row) + "\n" for row in rows))
    items, report = read_tasks(tasks, ProjectConfig(questions=["pairwise"]))
    assert sorted(tuple(item[2]) for item in items) == [("B", "C"), ("B\u200b", "C")]
    assert report.left_out["pairs of identical completions"] == 1
