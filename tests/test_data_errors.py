"""The malformed-data corpus: every problem gives one line naming file, line and field.
Also: `on_error: skip` reports exactly which lines it skipped."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from rlhf.config import DataConfig
from rlhf.data import DataError, LoadReport, load_records


@pytest.fixture()
def bad_dir(fixtures_dir: Path) -> Path:
    return fixtures_dir / "data" / "bad"


# (file, extra DataConfig fields, line, field, what the message must say)
CASES = [
    ("invalid_json.jsonl", {}, 3, None, "invalid JSON at column 35: Expecting property name enclosed in double quotes"),
    ("not_utf8.jsonl", {}, 2, None, "not UTF-8 text (byte 0xe9 at byte 16); re-save the file as UTF-8"),
    ("not_object.jsonl", {}, 2, None, "expected a JSON object ({...}) per row, got a list of 2 items"),
    ("missing_field.jsonl", {}, 2, "rejected", "missing (the row has fields: chosen, prompt)"),
    ("empty_string.jsonl", {}, 2, "completion", "expected a non-empty string, got an empty string"),
    ("non_string.jsonl", {}, 2, "chosen", "expected a non-empty string, got a number (42)"),
    ("chosen_equals_rejected.jsonl", {}, 2, "rejected", "identical to `chosen`"),
    ("duplicate_ranks.jsonl", {"allow_ties": False}, 2, "ranks", "duplicate rank 1 (completions 0 and 1)"),
    ("rank_length.jsonl", {}, 2, "ranks", "has 2 ranks for 3 completions; give one rank per completion"),
    ("too_few_completions.jsonl", {}, 1, "completions", "expected at least 2 completions to rank, got 1"),
    ("rating_off_scale.jsonl", {"rating_scale": [1, 5]}, 2, "rating", "7 is outside the rating scale [1, 5]"),
    ("rating_not_number.jsonl", {"rating_scale": [1, 5]}, 1, "rating", "expected a number, got a string ('great')"),
    ("chat_no_assistant.jsonl", {}, 2, "messages", "the last message must be the assistant's reply"),
    ("unknown_role.jsonl", {}, 1, "messages[0].role", "unknown role 'tool'; expected one of system, user"),
    ("missing_content.jsonl", {}, 1, "messages[1].content", "missing"),
    ("hh_no_shared_prefix.jsonl", {}, 2, "rejected", 'does not share the prompt of `chosen` (the transcript up to the last "\\n\\nAssistant:")'),
    ("array_element.json", {}, 8, "completion", "expected a non-empty string, got a number (5)"),
    ("array_broken.json", {}, 3, None, "invalid JSON at column 18: Expecting ',' delimiter"),
    ("bad_row.csv", {}, 3, None, "CSV row has 4 cells but the header has 2 columns"),
    ("duplicate_key.jsonl", {}, 2, None, "field `completion` appears twice in one object; give each field once"),
    ("array_duplicate_key.json", {}, 3, None, "field `prompt` appears twice in one object"),
    ("nested_too_deep.jsonl", {}, 2, None, "JSON nested too deeply to read"),
    ("integer_too_long.jsonl", {}, 1, None, "a value JSON cannot hold as a number: Exceeds the limit"),
    ("array_in_jsonl.jsonl", {}, 1, None, "this .jsonl file holds a JSON array, not one object per line: name it `.json` to read the array"),
    ("array_one_line.jsonl", {}, 1, None, "this .jsonl file holds a JSON array, not one object per line"),
    ("rejected_reads_the_same.jsonl", {}, 2, "rejected", "reads the same as `chosen` (they differ only in whitespace, Unicode normalization or invisible characters)"),
    ("ranking_reads_the_same.jsonl", {}, 1, "completions[1]", "reads the same as completions[0] but ranked differently (2 vs 1)"),
    # float32 tensors take these numbers: beyond its range they would train a NaN model
    ("weight_beyond_float32.jsonl", {}, 2, "weight", "expected a finite number of at most 3.4e+38 in size, got a number (1e+39)"),
    ("weight_nan.jsonl", {}, 1, "weight", "expected a finite number of at most 3.4e+38 in size, got a number (nan)"),
    ("rating_huge_integer.jsonl", {"rating_scale": [1, 5]}, 2, "rating", "expected a finite number of at most 3.4e+38 in size, got a number ("),
    ("csv_missing_column.csv", {"expect": "comparison"}, None, None, "found prompt data (format `prompts`), but this stage expects comparison data; the first row has fields: prompt, chosen; for example format `pairwise` is {prompt, chosen, rejected"),
    ("csv_empty_cell.csv", {}, 3, "chosen", "expected a non-empty string, got an empty string"),
    ("empty_file.jsonl", {}, None, None, "no records to use (0 rows read, 0 records kept)"),
    ("blank_lines_only.jsonl", {}, None, None, "no records to use (0 rows read, 0 records kept)"),
    ("truncated_last_line.jsonl", {}, 2, None, "invalid JSON at column 59: Expecting ':' delimiter"),
    ("null_field.jsonl", {}, 2, "chosen", "missing (null)"),
    ("bool_field.jsonl", {}, 1, "prompt", "expected a non-empty string, got a boolean (true)"),
    ("list_as_completion.jsonl", {}, 1, "completion[0]", "expected a message object {role, content}, got a string ('Hello')"),
    ("messages_not_list.jsonl", {}, 1, "messages", "expected a non-empty list of messages, got a string ('hi')"),
    ("messages_empty.jsonl", {}, 1, "messages", "expected a non-empty list of messages, got an empty list"),
    ("message_not_object.jsonl", {}, 1, "messages[0]", "expected a message object {role, content}, got a string ('hi')"),
    ("sharegpt_unknown_speaker.jsonl", {}, 1, "conversations[1].from", "unknown role 'robot'; expected one of system, user, human, prompter, assistant, gpt, bot, model"),
    ("ranking_completions_not_list.jsonl", {}, 1, "completions", "expected a list of completions, got a string ('An apple.')"),
    ("ranking_ranks_not_list.jsonl", {}, 1, "ranks", "expected a list of numbers, got a number (0)"),
    ("rating_nan_literal.jsonl", {"rating_scale": [1, 5]}, 1, "rating", "expected a finite number of at most 3.4e+38 in size, got a number (nan)"),
    ("rating_bool.jsonl", {"rating_scale": [1, 5]}, 1, "rating", "expected a number, got a boolean (true)"),
    ("label_empty.jsonl", {}, 1, "label", "expected a non-empty string, boolean or integer, got an empty string"),
    ("feedback_empty.jsonl", {}, 1, "feedback", "expected a non-empty string, got an empty string"),
    ("margin_string.jsonl", {}, 1, "margin", "expected a number, got a string ('big')"),
    ("margin_infinite.jsonl", {}, 1, "margin", "expected a finite number of at most 3.4e+38 in size, got a number (inf)"),
    ("weight_negative.jsonl", {}, 2, "weight", "must be a positive number, got -1"),
    ("weight_zero.jsonl", {}, 1, "weight", "must be a positive number, got 0"),
    ("prompt_empty.jsonl", {}, 1, "prompt", "expected a non-empty string, got an empty string"),
    ("chosen_whitespace_only.jsonl", {}, 1, "chosen", "expected a non-empty string, got a string of only whitespace"),
    ("alpaca_missing_output.json", {}, 7, "output", "missing (the row has fields: input, instruction)"),
    ("alpaca_instruction_number.json", {}, 2, "instruction", "expected a non-empty string, got a number (7)"),
    ("hh_no_assistant_turn.jsonl", {}, 1, "chosen", 'no "\\n\\nAssistant:" turn; expected an Anthropic HH transcript'),
    ("mixed_formats.jsonl", {}, 2, "chosen", "missing (the row has fields: completions, prompt, ranks)"),
    ("misspelled_field.jsonl", {"expect": "sft"}, None, None, "found prompt data (format `prompts`), but this stage expects sft data (demonstration); the first row has fields: prompt, completon"),
    ("raw_newline_in_string.jsonl", {}, 1, None, "invalid JSON at column 40: Invalid control character at"),
    ("trailing_comma.jsonl", {}, 1, None, "invalid JSON at column 35: Expecting property name enclosed in double quotes"),
    ("lone_surrogate.jsonl", {}, 1, "completion", "holds U+D800 at character 7, half of a UTF-16 surrogate pair with no other half"),
    ("unsupported_extension.txt", {}, None, None, "unsupported file type `.txt`; expected one of .jsonl, .ndjson, .json, .csv, .parquet"),
    ("utf16.jsonl", {}, None, None, "the file is UTF-16-LE text, not UTF-8 (it starts with that encoding's byte-order mark): re-save it as UTF-8"),
    ("utf32_bom.jsonl", {}, None, None, "the file is UTF-32-LE text, not UTF-8 (it starts with that encoding's byte-order mark)"),
    ("utf16_be_no_bom.jsonl", {}, None, None, "the file is UTF-16-BE text, not UTF-8 (no byte-order mark, but each character's byte follows zero bytes)"),
    ("utf16_le_no_bom.jsonl", {}, None, None, "the file is UTF-16-LE text, not UTF-8 (no byte-order mark, but each character's byte is followed by zero bytes)"),
    ("mixed_files_dir", {}, None, None, "the directory holds files rlhf does not read (notes.txt; pairs.jsonl); give one file, or a directory of files of one format"),
    ("mixed_formats_dir", {}, None, None, "the directory holds data files of several formats (a.jsonl; b.csv); give one file"),
    ("json_scalar.json", {}, 1, None, "expected a JSON object ({...}) per row, got a number (42)"),
]  # fmt: skip

ACCEPTED = {
    "ranking_negative_rank.jsonl": "ranks are compared, never counted: -1 ranks above 0, as any smaller number",
    "ranking_rank_float.jsonl": "ranks may be any numbers (averaged ranks are fractional); only their order counts",
    "correction_same_as_completion.jsonl": "a correction equal to its completion says it needs none: "
    "a demonstration as good as any other",
    "cr_line_endings.jsonl": "a lone carriage return ends a line (classic Mac files), as LF and CRLF do",
    "cr_line_endings.csv": "a lone carriage return ends a line (classic Mac files), as LF and CRLF do",
}
"""Files of the corpus that load, and why that is right."""


@pytest.mark.parametrize(("name", "cfg", "line", "field", "message"), CASES, ids=[case[0] for case in CASES])
def test_bad_file_names_file_line_and_field(bad_dir, name, cfg, line, field, message):
    """`expect` in `cfg`: the stage's kind of data (the error is about the data not fitting it)."""
    path = bad_dir / name
    settings = dict(cfg)
    expect = settings.pop("expect", None)
    with pytest.raises(DataError) as info:
        load_records(DataConfig(path=str(path), **settings), expect=expect)
    err = info.value
    assert (err.path, err.line, err.field) == (str(path), line, field)
    text = str(err)
    where = f"{path}:{line}: " if line is not None else f"{path}: "
    where += f"field `{field}`: " if field else ""
    assert text.startswith(where + message), text
    assert "\n" not in text


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_accepted_entries_of_the_corpus_load(bad_dir, name):
    assert load_records(DataConfig(path=str(bad_dir / name))).records


def test_every_file_of_the_corpus_is_checked(bad_dir):
    """At least 60 inputs, each an error case or documented as accepted (none left untested)."""
    files = {path.name for path in bad_dir.iterdir()}
    assert files == {case[0] for case in CASES} | set(ACCEPTED)
    assert len(files) >= 60


def test_error_message_example_format():
    err = DataError("data/pairs.jsonl", 7, "chosen", "expected a non-empty string, got an empty string")
    assert str(err) == "data/pairs.jsonl:7: field `chosen`: expected a non-empty string, got an empty string"
    assert str(DataError("x.json", None, None, "file not found")) == "x.json: file not found"
    # Newlines in a message are escaped, so the error stays one line.
    assert str(DataError("a.jsonl", 1, "f", "bad\nvalue")) == "a.jsonl:1: field `f`: bad\\nvalue"


def test_data_error_survives_pickling():
    err = pickle.loads(pickle.dumps(DataError("a.jsonl", 3, "rank", "oops")))
    assert (err.path, err.line, err.field, err.message, str(err)) == (
        "a.jsonl",
        3,
        "rank",
        "oops",
        "a.jsonl:3: field `rank`: oops",
    )


def _mixed_pairs(path: Path) -> Path:
    good = {"prompt": "p", "chosen": "a", "rejected": "b"}
    with open(path, "wb") as handle:
        handle.write(json.dumps(good).encode() + b"\n")  # 1 good
        handle.write(b'{"prompt": "p", "chosen": \n')  # 2 invalid JSON
        handle.write(json.dumps({**good, "prompt": "q"}).encode() + b"\n")  # 3 good
        handle.write(json.dumps({"prompt": "p", "chosen": "a"}).encode() + b"\n")  # 4 missing `rejected`
        handle.write(b"\n")  # 5 blank: not a row
        handle.write(b'{"prompt": "\xff", "chosen": "a", "rejected": "b"}\n')  # 6 not UTF-8
        handle.write(json.dumps({**good, "rejected": "a"}).encode() + b"\n")  # 7 chosen == rejected
        handle.write(json.dumps({**good, "prompt": "r"}).encode() + b"\n")  # 8 good
    return path


def test_skip_reports_lines_and_count(tmp_path):
    path = _mixed_pairs(tmp_path / "mixed.jsonl")
    data = load_records(DataConfig(path=str(path), on_error="skip"))
    assert [r.prompt for r in data.records] == ["p", "q", "r"]
    report = data.report
    assert (report.rows_read, report.records_kept, len(report.skipped)) == (7, 3, 4)
    assert report.skipped_lines == [2, 4, 6, 7]
    assert [err.field for err in report.skipped] == [None, "rejected", None, "rejected"]
    # Which problems, counted (the summary every stage prints, and `summary.json`'s data report).
    assert report.summary() == (
        f"{path}: 7 rows read, 3 records kept (pairwise); 4 rows skipped (lines 2, 4, 6, 7: 1 invalid JSON: "
        "Expecting value, 1 field `rejected`: missing, 1 not UTF-8 text, 1 more kinds)"
    )
    assert report.as_dict()["skipped_by_problem"] == {
        "invalid JSON: Expecting value": 1, "field `rejected`: missing": 1, "not UTF-8 text": 1,
        "field `rejected`: identical to `chosen`": 1,
    }  # fmt: skip


def test_raise_stops_at_first_bad_row(tmp_path):
    path = _mixed_pairs(tmp_path / "mixed.jsonl")
    with pytest.raises(DataError) as info:
        load_records(path)
    assert info.value.line == 2


def test_skip_in_json_array_and_csv(bad_dir, tmp_path):
    data = load_records(DataConfig(path=str(bad_dir / "array_element.json"), on_error="skip"))
    assert ([r.source.line for r in data.records], data.report.skipped_lines) == ([2, 3], [8])
    data = load_records(DataConfig(path=str(bad_dir / "bad_row.csv"), on_error="skip"))
    assert ([r.prompt for r in data.records], data.report.skipped_lines) == (["hello", "fine"], [3])

    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"prompt,completion\nhello,world\ncaf\xe9,x\nok,yes\n")
    data = load_records(DataConfig(path=str(latin), on_error="skip"))
    assert ([r.prompt for r in data.records], data.report.skipped_lines) == (["hello", "ok"], [3])
    assert str(data.report.skipped[0]).startswith(f"{latin}:3: not UTF-8 text (byte 0xe9 at byte 4)")


def test_broken_json_array_stops_even_when_skipping(bad_dir):
    # After a syntax error nothing else in the array can be trusted.
    with pytest.raises(DataError) as info:
        load_records(DataConfig(path=str(bad_dir / "array_broken.json"), on_error="skip"))
    assert info.value.line == 3


def test_every_row_bad_is_an_error(bad_dir):
    path = bad_dir / "too_few_completions.jsonl"
    with pytest.raises(DataError) as info:
        load_records(DataConfig(path=str(path), on_error="skip"))
    assert str(info.value) == (
        f"{path}: no records to use (1 rows read, 0 records kept (ranking); 1 rows skipped (lines 1: 1 field "
        "`completions`: expected at least 2 completions to rank))"
    )


def test_expect_names_found_and_wanted_kinds(shared_dir, fixtures_dir):
    path = shared_dir / "data" / "alpaca_en_demo.json"
    with pytest.raises(DataError) as info:
        load_records(path, expect="reward")
    assert str(info.value) == (
        f"{path}: found demonstration data (format `alpaca`), but this stage expects reward data "
        "(comparison or ranking or rating or label); the first row has fields: instruction, input, output; "
        "for example format `pairwise` is {prompt, chosen, rejected, margin?, weight?} (`rlhf data formats` "
        "lists them all)"
    )
    ranking = fixtures_dir / "data" / "ranking.jsonl"
    assert load_records(ranking, expect="reward").kind == "ranking"
    with pytest.raises(
        DataError, match=r"found ranking data \(format `ranking`\), but this stage expects sft data"
    ):
        load_records(ranking, expect="sft")
    with pytest.raises(ValueError, match="unknown `expect` 'dpo'"):
        load_records(ranking, expect="dpo")


def test_report_summary_lists_left_out_and_many_lines():
    report = LoadReport(path="x.jsonl", format="oasst", rows_read=30, records_kept=5)
    report.skipped = [DataError("x.jsonl", line, None, "bad") for line in range(1, 25)]
    report.leave_out("unranked replies", 2)
    report.leave_out("unranked replies")
    assert report.summary() == (
        "x.jsonl: 30 rows read, 5 records kept (oasst); 24 rows skipped (lines 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, "
        "11, 12, 13, 14, 15, 16, 17, 18, 19, 20, ... 4 more: 24 bad); left out 3 unranked replies"
    )


def test_skipped_tree_counts_nothing_as_left_out(fixtures_dir, tmp_path):
    good = (fixtures_dir / "data" / "oasst_small.jsonl").read_text().splitlines()[1]
    tree = json.loads((fixtures_dir / "data" / "oasst_small.jsonl").read_text().splitlines()[0])
    # A ranked reply deep in the tree loses its text: the whole tree (line 1) is skipped.
    tree["prompt"]["replies"][0]["replies"][0]["replies"][0]["text"] = ""
    path = tmp_path / "trees.jsonl"
    path.write_text(json.dumps(tree) + "\n" + good + "\n")
    data = load_records(DataConfig(path=str(path), on_error="skip"))
    assert (len(data.records), data.report.skipped_lines, data.report.left_out) == (1, [1], {})
    assert data.report.skipped[0].field == "prompt.replies[0].replies[0].replies[0].text"


def test_a_named_pipe_is_not_a_missing_file(tmp_path):
    import os

    fifo = tmp_path / "pairs.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match=r"not a regular file \(a named pipe, device or socket\)"):
        load_records(DataConfig(path=str(fifo)))


def test_a_misspelled_field_is_named_with_the_field_it_looks_like(tmp_path):
    """`completon` in every row used to be read as bare prompts without a word about the field."""
    sft = tmp_path / "sft.jsonl"
    sft.write_text('{"prompt": "p", "completon": "a"}\n{"prompt": "q", "completon": "b"}\n')
    with pytest.raises(DataError) as info:
        load_records(DataConfig(path=str(sft)), expect="sft")
    assert (
        "but this stage expects sft data (demonstration); the first row has fields: prompt, completon;"
        in str(info.value)
    )
    assert str(info.value).endswith("lists them all); did you mean `completion` for `completon`?")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"promt": "p", "chosen": "a", "rejeted": "b"}\n')
    with pytest.raises(DataError, match=r"did you mean `prompt` for `promt`, `rejected` for `rejeted`\?$"):
        load_records(DataConfig(path=str(pairs)))


@pytest.mark.slow
def test_skipped_rows_are_counted_by_problem_in_the_run_summary_and_the_report(tmp_path):
    """Real files are messy (HH has replies left empty): under `on_error: skip` the run's
    summary.json and its HTML report say how many rows of which problem were skipped."""
    from rlhf.config import load_config
    from rlhf.report.load import load_run
    from rlhf.report.page import render_report
    from rlhf.reward.config import RewardConfig
    from rlhf.reward.train import run_reward

    good = [{"prompt": f"q{i}", "chosen": "a good answer", "rejected": "no"} for i in range(6)]
    rows = [json.dumps(row) for row in good]
    rows[1:1] = ['{"prompt": "q", "chosen": ', json.dumps({"prompt": "q", "chosen": "a"})]
    rows.append(json.dumps({"prompt": "q", "chosen": "b"}))
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(rows) + "\n")
    cfg = load_config(RewardConfig, None, [
        f"data.path={data}", "data.on_error=skip", "data.max_length=32", "prompt.template=raw", "max_steps=1",
        "batch_size=2", "eval.fraction=0", f"output_dir={tmp_path / 'run' / 'reward'}",
        "logging.progress=false", "logging.tensorboard=false",
    ])  # fmt: skip
    run_reward(cfg)
    report = json.loads((tmp_path / "run" / "reward" / "summary.json").read_text())["data_report"]
    assert (report["rows_read"], report["records_kept"], report["skipped"]) == (9, 6, 3)
    assert report["skipped_by_problem"] == {
        "field `rejected`: missing": 2,
        "invalid JSON: Expecting value": 1,
    }
    page = render_report(load_run(tmp_path / "run"))
    assert "skipped: field `rejected`: missing</td><td>2" in page.replace('<td class="num">', "<td>")


def test_carriage_return_line_endings_read_line_by_line(bad_dir):
    """A file whose lines end in a lone CR is one long line to a binary reader: each line must be
    its own row, numbered as an editor numbers it (a CR inside a quoted CSV cell stays in it)."""
    jsonl = load_records(DataConfig(path=str(bad_dir / "cr_line_endings.jsonl")))
    rows = [(r.prompt, r.completion, r.source.line) for r in jsonl.records]
    assert rows == [("Say hi.", "Hi!", 1), ("Say bye.", "Bye!", 2), ("Say yes.", "Yes.", 3)]
    csv = load_records(DataConfig(path=str(bad_dir / "cr_line_endings.csv")))
    rows = [(r.prompt, r.completion, r.source.line) for r in csv.records]
    assert rows == [("Say hi.", "Hi!", 2), ("Say, bye.", "Bye\rnow!", 3)]


def test_a_symbolic_link_loop_or_dangling_link_says_so(tmp_path):
    (tmp_path / "a.jsonl").symlink_to("b.jsonl")
    (tmp_path / "b.jsonl").symlink_to("a.jsonl")
    with pytest.raises(
        DataError, match=r"a symbolic link that loops \(.*a\.jsonl -> .*b\.jsonl -> .*a\.jsonl\)"
    ):
        load_records(DataConfig(path=str(tmp_path / "a.jsonl")))
    (tmp_path / "gone.jsonl").symlink_to("moved.jsonl")
    with pytest.raises(DataError, match="a symbolic link to moved.jsonl, which does not exist"):
        load_records(DataConfig(path=str(tmp_path / "gone.jsonl")))


def test_a_directory_of_files_of_one_format_is_read_file_by_file(tmp_path):
    """Every row names its own file and line (a row of the wrong schema in the second file is that
    file's error), and a directory's splits follow the files' names."""
    folder = tmp_path / "pairs"
    folder.mkdir()
    (folder / "README.md").write_text("# notes, not data\n")
    (folder / "part-1.jsonl").write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n")
    (folder / "part-2.jsonl").write_text(
        json.dumps({"prompt": "q", "chosen": "c", "rejected": "d"})
        + "\n"
        + json.dumps({"prompt": "r"})
        + "\n"
    )
    with pytest.raises(DataError) as info:
        load_records(DataConfig(path=str(folder)))
    assert str(info.value).startswith(f"{folder / 'part-2.jsonl'}:2: field `chosen`: missing")
    (folder / "part-2.jsonl").write_text(json.dumps({"prompt": "q", "chosen": "c", "rejected": "d"}) + "\n")
    loaded = load_records(DataConfig(path=str(folder)))
    assert [str(r.source) for r in loaded.records] == [
        f"{folder / 'part-1.jsonl'}:1",
        f"{folder / 'part-2.jsonl'}:1",
    ]
    split = tmp_path / "split"
    split.mkdir()
    for name, prompt in (("train.jsonl", "p"), ("test.jsonl", "q")):
        (split / name).write_text(json.dumps({"prompt": prompt, "chosen": "a", "rejected": "b"}) + "\n")
    assert [r.prompt for r in load_records(DataConfig(path=str(split), split="test")).records] == ["q"]
    with pytest.raises(DataError, match=r"split `validation` not found \(available: test, train\)"):
        load_records(DataConfig(path=str(split), split="validation"))
