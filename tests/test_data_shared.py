"""The real public files in ../shared/data, checked against counts computed here independently."""

from __future__ import annotations

import json

from rlhf.data import Demonstration, Message, Ranking, load_records


def test_alpaca_demo(shared_dir):
    path = shared_dir / "data" / "alpaca_en_demo.json"
    rows = json.loads(path.read_text(encoding="utf-8"))
    data = load_records(path, expect="sft")
    assert (data.format, data.kind) == ("alpaca", "demonstration")
    assert len(rows) == len(data.records) == 999
    assert (data.report.rows_read, data.report.skipped, data.report.left_out) == (999, [], {})
    assert all(isinstance(r, Demonstration) for r in data.records)
    first = data.records[0]
    assert first.prompt == "Describe a process of making crepes."
    assert first.completion.startswith("Making crepes is an easy and delicious process!")
    assert first.source.line == 2
    with_input = [i for i, row in enumerate(rows) if row["input"].strip()]
    assert with_input, "the demo file has rows with an input"
    for i in with_input:
        assert data.records[i].prompt == f"{rows[i]['instruction']}\n\n{rows[i]['input']}"
        assert data.records[i].completion == rows[i]["output"]


def _walk(message, counts):
    """Count messages, ranked messages, ranked groups and their sizes, the simple way."""
    counts["messages"] += 1
    counts["ranked"] += message.get("rank") is not None
    replies = message.get("replies") or []
    ranked = [reply for reply in replies if reply.get("rank") is not None]
    if len(ranked) >= 2:
        counts["groups"] += 1
        counts["in_groups"] += len(ranked)
        counts["unranked_next_to_ranked"] += len(replies) - len(ranked)
    elif len(ranked) == 1:
        counts["lone"] += 1
    for reply in replies:
        _walk(reply, counts)


def test_oasst_trees(shared_dir):
    path = shared_dir / "data" / "oasst_en_100_tree.jsonl"
    counts = dict.fromkeys(
        ("messages", "ranked", "groups", "in_groups", "unranked_next_to_ranked", "lone"), 0
    )
    lines = path.read_text(encoding="utf-8").splitlines()
    for line in lines:
        _walk(json.loads(line)["prompt"], counts)
    assert (len(lines), counts["messages"], counts["ranked"]) == (100, 1167, 641)

    data = load_records(path, expect="reward")
    assert (data.format, data.kind, data.report.rows_read) == ("oasst", "ranking", 100)
    assert all(isinstance(r, Ranking) for r in data.records)
    assert len(data.records) == counts["groups"]
    assert sum(len(r.completions) for r in data.records) == counts["in_groups"]
    assert all(len(r.completions) == len(r.ranks) >= 2 for r in data.records)
    # Whatever a group could not use is reported, not dropped.
    expected_left_out = {
        "unranked replies next to ranked siblings (oasst)": counts["unranked_next_to_ranked"],
        "ranked replies without a ranked sibling (oasst)": counts["lone"],
    }
    assert data.report.left_out == {k: v for k, v in expected_left_out.items() if v}
    assert sum(data.report.left_out.values()) == counts["unranked_next_to_ranked"] + counts["lone"]
    assert counts["ranked"] == counts["in_groups"] + counts["lone"]

    first = data.records[0]
    tree = json.loads(lines[0])["prompt"]
    assert first.prompt == (Message("user", tree["text"]),)
    assert first.completions == [reply["text"] for reply in tree["replies"]]
    assert first.ranks == [reply["rank"] for reply in tree["replies"]]
    # Every prompt is a conversation from the root: it starts with the prompter's message.
    assert all(r.prompt[0].role == "user" for r in data.records)
