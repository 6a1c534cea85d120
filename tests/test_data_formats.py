"""Each format's good fixture: detected format, counts and normalized field values."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlhf.config import DataConfig
from rlhf.data import (
    FORMATS,
    Comparison,
    Correction,
    DataError,
    Demonstration,
    Feedback,
    Label,
    Message,
    PromptOnly,
    Rating,
    Source,
    detect_format,
    format_table,
    hh_messages,
    load_records,
)


@pytest.fixture()
def data_dir(fixtures_dir: Path) -> Path:
    return fixtures_dir / "data"


def load(path: Path, **cfg):
    return load_records(DataConfig(path=str(path), **cfg))


def test_prompt_completion_text_and_messages(data_dir):
    data = load(data_dir / "prompt_completion.jsonl")
    assert (data.format, data.kind, data.report.rows_read) == ("prompt_completion", "demonstration", 3)
    first, second, third = data.records
    assert first == Demonstration(
        "What is 2 + 2?", "4", Source(str(data_dir / "prompt_completion.jsonl"), 1), meta={"id": "a1"}
    )
    # Line 2 is blank, so the second record comes from line 3.
    assert second.source.line == 3
    assert second.prompt == (Message("system", "Be brief."), Message("user", "Capital of France?"))
    assert second.completion == "Paris."
    assert (third.completion, third.source.line) == ("Hi!", 4)


def test_chat_last_assistant_turn_is_completion(data_dir):
    data = load(data_dir / "chat.jsonl")
    assert (data.format, len(data.records)) == ("chat", 2)
    first, second = data.records
    assert first.prompt == (Message("system", "You are kind."), Message("user", "Hello"))
    assert first.completion == "Hi there!"
    # `Human` and `gpt` are mapped to our roles; the extra field lands in meta.
    assert [m.role for m in second.prompt] == ["user", "assistant", "user"]
    assert second.completion == "Red."
    assert second.meta == {"lang": "en"}


def test_alpaca_prompt_joins_input(data_dir):
    data = load(data_dir / "alpaca.json")
    assert (data.format, len(data.records)) == ("alpaca", 3)
    assert [r.prompt for r in data.records] == ["Add the numbers.\n\n2 and 3", "Name a fruit.", "Say yes."]
    assert [r.completion for r in data.records] == ["5", "Apple", "Yes"]
    # Each JSON array element keeps the line it starts on.
    assert [r.source.line for r in data.records] == [2, 7, 12]
    assert data.records[0].meta == {"instruction": "Add the numbers.", "input": "2 and 3"}


def test_sharegpt(data_dir):
    data = load(data_dir / "sharegpt.json")
    assert (data.format, len(data.records)) == ("sharegpt", 2)
    first = data.records[0]
    assert first.prompt == (Message("system", "Answer in French."), Message("user", "Thank you"))
    assert first.completion == "Merci"
    assert first.meta == {"id": "s1"}
    assert data.records[1].prompt == (Message("user", "One?"),)


def test_text_is_plain(data_dir):
    data = load(data_dir / "text.jsonl")
    assert data.format == "text"
    assert [(r.prompt, r.completion, r.plain_text) for r in data.records] == [
        ("", "Once upon a time there was a cat.", True),
        ("", "The end.", True),
    ]


def test_pairwise_with_margin(data_dir):
    data = load(data_dir / "pairwise.jsonl")
    assert (data.format, data.kind) == ("pairwise", "comparison")
    assert [(r.prompt, r.chosen, r.rejected, r.margin) for r in data.records] == [
        ("Best pet?", "A dog.", "A rock.", 2.5),
        ("Sky colour?", "Blue.", "Green.", None),
        ("Two plus two?", "Four.", "Five.", None),
    ]
    assert data.records[2].meta == {"annotator": "b7"}


def test_pairwise_chat_messages(data_dir):
    data = load(data_dir / "pairwise_chat.jsonl")
    assert data.format == "pairwise"
    first, second, third = data.records
    assert (first.prompt, first.chosen, first.rejected) == (
        (Message("user", "Greet me."),),
        "Hello!",
        "Go away.",
    )
    # The prompt is repeated inside each conversation: the conversation head is the whole prompt.
    assert second.prompt == (Message("user", "Count to two."),)
    assert (second.chosen, second.rejected) == ("1, 2", "2, 1")
    # No prompt field: the shared messages before the last reply are the prompt.
    assert third.prompt == (Message("user", "Hi"), Message("assistant", "Hello."), Message("user", "Joke?"))
    assert (third.chosen, third.rejected) == ("Knock knock.", "No.")


def test_hh_transcripts(data_dir):
    data = load(data_dir / "hh.jsonl")
    assert (data.format, len(data.records)) == ("hh", 2)
    first, second = data.records
    assert first.prompt == "\n\nHuman: What is a cat?\n\nAssistant:"
    assert (first.chosen, first.rejected) == ("A small furry animal.", "A car.")
    assert second.prompt.endswith("How are you?\n\nAssistant:")
    assert (second.chosen, second.rejected) == ("Fine, thanks.", "Leave me alone.")
    assert hh_messages(second.prompt) == (
        Message("user", "Hi"),
        Message("assistant", "Hello!"),
        Message("user", "How are you?"),
    )


def test_sharegpt_pairwise(data_dir):
    data = load(data_dir / "sharegpt_pairwise.json")
    assert data.format == "sharegpt_pairwise"
    (record,) = data.records
    assert record == Comparison(
        (Message("user", "Pick a number."),),
        "Seven.",
        "No.",
        Source(str(data_dir / "sharegpt_pairwise.json"), 2),
    )


def test_ranking_with_ties(data_dir):
    data = load(data_dir / "ranking.jsonl")
    assert (data.format, data.kind) == ("ranking", "ranking")
    first, second = data.records
    assert first.completions == ["Vast and blue.", "Wet.", "Salty water covering most of Earth."]
    assert first.ranks == [1, 3, 2]
    # rank 1 < 2 < 3: (0 beats 2), (0 beats 1), (2 beats 1)
    assert sorted(first.pairs()) == [(0, 1), (0, 2), (2, 1)]
    assert second.ranks == [1, 1, 2]
    assert sorted(second.pairs()) == [(0, 2), (1, 2)]
    assert second.meta == {"batch": 4}


def test_ranking_ties_refused_when_not_allowed(data_dir):
    with pytest.raises(DataError, match="duplicate rank 1") as info:
        load(data_dir / "ranking.jsonl", allow_ties=False)
    assert (info.value.line, info.value.field) == (2, "ranks")


def test_oasst_small_tree(data_dir):
    data = load(data_dir / "oasst_small.jsonl")
    assert (data.format, data.kind, data.report.rows_read) == ("oasst", "ranking", 2)
    root, follow_ups, deep, second_tree = data.records
    assert root.prompt == (Message("user", "Root question"),)
    # The deleted answer (rank 2) and the unranked answer are not completions.
    assert (root.completions, root.ranks) == (["Answer one", "Answer two"], [0, 1])
    assert follow_ups.prompt == (Message("user", "Root question"), Message("assistant", "Answer one"))
    assert follow_ups.completions == ["Follow-up one", "Follow-up two"]
    assert follow_ups.meta["completion_role"] == "user"
    assert deep.prompt[-1] == Message("user", "Follow-up one")
    assert (deep.completions, deep.ranks) == (["Deep answer one", "Deep answer two"], [1, 0])
    assert deep.meta["parent_id"] == "p1"
    assert deep.meta["message_tree_id"] == "t1"
    assert (second_tree.source.line, second_tree.ranks) == (2, [1, 0])
    assert data.report.left_out == {
        "unranked replies next to ranked siblings (oasst)": 2,
        "ranked replies without a ranked sibling (oasst)": 1,
        "deleted messages, with their replies (oasst)": 2,
    }
    assert "left out 2 deleted messages" in data.report.summary()


def test_oasst_bare_message_row(data_dir):
    data = load(data_dir / "oasst_bare.jsonl")
    assert data.format == "oasst"
    (record,) = data.records
    assert record.prompt == (Message("user", "Bare root"),)
    assert (record.completions, record.ranks) == (["First", "Second"], [0, 1])
    assert record.meta["message_tree_id"] == "tx"


def test_rating_inside_scale(data_dir):
    data = load(data_dir / "rating.jsonl", rating_scale=[1, 5])
    assert (data.format, data.kind) == ("rating", "rating")
    assert [(r.completion, r.rating) for r in data.records] == [
        ("Leaves fall, quiet pond.", 4.0),
        ("I like cheese.", 1.5),
    ]
    assert all(isinstance(r, Rating) for r in data.records)


def test_rating_needs_scale(data_dir):
    with pytest.raises(DataError, match=r"set `data.rating_scale: \[low, high\]`"):
        load(data_dir / "rating.jsonl")


def test_label_correction_feedback(data_dir):
    labels = load(data_dir / "label.jsonl")
    assert labels.format == "label"
    assert [r.label for r in labels.records] == ["true", "false", "good"]
    assert isinstance(labels.records[0], Label)
    (fix,) = load(data_dir / "correction.jsonl").records
    assert isinstance(fix, Correction)
    assert (fix.completion, fix.correction) == ("kat", "cat")
    (critique,) = load(data_dir / "feedback.jsonl").records
    assert isinstance(critique, Feedback)
    assert critique.feedback == "Too short; mention mass."


def test_prompts(data_dir):
    data = load(data_dir / "prompts.jsonl")
    assert (data.format, data.kind) == ("prompts", "prompt")
    assert data.records[0] == PromptOnly("Tell me a story.", Source(str(data_dir / "prompts.jsonl"), 1))
    assert data.records[1].prompt == (Message("user", "Write a poem."),)


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"prompt": "p", "chosen": "a", "rejected": "b", "completion": "c"}, "pairwise"),
        ({"chosen": "a", "rejected": "b"}, "hh"),
        ({"chosen": [{"role": "assistant", "content": "a"}], "rejected": []}, "pairwise"),
        ({"conversations": [], "chosen": {}, "rejected": {}}, "sharegpt_pairwise"),
        ({"prompt": "p", "completions": [], "ranks": []}, "ranking"),
        ({"prompt": "p", "completion": "c", "rating": 1}, "rating"),
        ({"prompt": "p", "completion": "c", "label": "x"}, "label"),
        ({"prompt": "p", "completion": "c", "correction": "x"}, "correction"),
        ({"prompt": "p", "completion": "c", "feedback": "x"}, "feedback"),
        ({"prompt": "p", "completion": "c"}, "prompt_completion"),
        ({"prompt": "p", "messages": []}, "chat"),
        ({"conversations": []}, "sharegpt"),
        ({"instruction": "i", "input": "", "output": "o"}, "alpaca"),
        ({"text": "t"}, "text"),
        ({"prompt": "p"}, "prompts"),
        ({"message_tree_id": "t", "prompt": {"text": "x"}}, "oasst"),
        ({"text": "t", "role": "prompter", "replies": []}, "oasst"),
        # A null field does not count as present.
        ({"prompt": "p", "completion": "c", "rating": None}, "prompt_completion"),
    ],
)
def test_detection_order(row, expected):
    assert detect_format(row, Source("x.jsonl", 1)) == expected


def test_detection_failure_names_fields():
    with pytest.raises(DataError) as info:
        detect_format({"question": "q", "answer": "a"}, Source("qa.jsonl", 1))
    assert str(info.value) == (
        "qa.jsonl:1: cannot tell the data format from the fields (answer, question); set `data.format` "
        "(`rlhf data formats` lists them)"
    )


def test_format_override(data_dir):
    # prompt+completion rows read as bare prompts when asked.
    data = load(data_dir / "prompt_completion.jsonl", format="prompts")
    assert data.format == "prompts"
    assert data.records[0].meta == {"completion": "4", "id": "a1"}
    with pytest.raises(DataError, match="unknown `data.format` 'nope'"):
        load(data_dir / "prompt_completion.jsonl", format="nope")


def test_registry_lists_every_format():
    table = format_table()
    assert len(FORMATS) == 25  # 16 generic, 9 of published datasets (public.py)
    for name, spec in FORMATS.items():
        assert name in table
        assert spec.description in table
