"""Text that cannot be stored never enters a labeling project, and exports are written whole.

A lone UTF-16 surrogate (JSON's `"\\ud800"` escape, or bytes that are not UTF-8 in a command-line
argument) decodes to a Python string that UTF-8 cannot encode: once stored, every export that
writes it broke (a 500, a traceback and a half-written file). It is refused wherever text enters
(HTTP bodies with 400 naming the field, the store, the command line), text stored by an older
version is exported with U+FFFD in its place (counted in the report), and an export that fails
leaves no file, or the earlier one, behind."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from label_helpers import Running, make_project
from rlhf.cli.main import main
from rlhf.label.export import export_rows, write_export
from rlhf.label.store import StoreError
from rlhf.label.tasks import ProjectConfig

RLHF = str(Path(sys.executable).with_name("rlhf"))
BROKEN = "\\ud800"
"""The JSON escape of a lone high surrogate, as a client would send it."""


def rlhf(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([RLHF, *args], capture_output=True, text=True, timeout=300)


@pytest.fixture()
def served(tmp_path):
    items = [(f"prompt {i}", [f"first {i}", f"second {i}"]) for i in range(3)]
    store = make_project(tmp_path / "p", ["pairwise", "correction", "feedback"], items)
    owner = store.add_annotator("olga", "owner")
    ann = store.add_annotator("ann")
    with Running(store) as srv:
        yield store, srv, owner, ann


def _submit_raw(client, item: int, feedback: str, correction: str = "better") -> tuple[int, dict]:
    """POST /api/submit with the texts spliced in as written (escapes included), as a client sends them."""
    body = (
        f'{{"item_id": {item}, "seconds": 1.0, "answer": {{"pairwise": "A", '
        f'"correction": {{"position": 0, "text": "{correction}"}}, "feedback": "{feedback}"}}}}'
    ).encode()
    status, _, payload = client.request(
        "POST", "/api/submit", raw=body, headers={"Content-Type": "application/json"}
    )
    return status, json.loads(payload)


def test_a_lone_surrogate_is_refused_at_submission_naming_the_field(served):
    store, srv, owner, ann = served
    client = srv.client(ann)
    item = client.next()["item"]["id"]
    status, data = _submit_raw(client, item, f"bad {BROKEN} x")
    assert status == 400
    assert data["error"].startswith("the body's `answer.feedback` holds U+D800 at character 4, half of")
    status, data = _submit_raw(client, item, "fine", correction=f"{BROKEN}better")
    assert status == 400 and "`answer.correction.text` holds U+D800 at character 0" in data["error"]
    # A pair of escapes that makes one character (a surrogate pair) is text.
    status, data = _submit_raw(client, item, "a smile \\ud83d\\ude00")
    assert status == 200, data
    stored = [s["answer"]["feedback"] for s in store.submissions()]
    assert stored == ["a smile \U0001f600"]
    status, _, payload = srv.client(owner).request(
        "POST",
        "/api/annotators",
        raw=f'{{"name": "eve{BROKEN}"}}'.encode(),
        headers={"Content-Type": "application/json"},
    )
    assert status == 400 and b"`name` holds U+D800" in payload
    assert [a.name for a in store.annotators()] == ["olga", "ann"]
    # The owner's export works: nothing unwritable got in.
    status, _, body = srv.client(owner).request("GET", "/api/export?format=judgments")
    assert (
        status == 200
        and json.loads(body.decode().splitlines()[0])["answer"]["feedback"] == "a smile \U0001f600"
    )


def test_the_store_refuses_unstorable_text_from_any_caller(tmp_path):
    store = make_project(tmp_path / "p", ["pairwise", "feedback"], [("p", ["a", "b"])])
    with pytest.raises(StoreError, match="annotator `name` holds U\\+DCFF at character 3"):
        store.add_annotator("bob\udcff")  # a command-line name holding the byte 0xff
    with pytest.raises(StoreError, match="tasks.jsonl:9: `completions\\[1\\]` holds U\\+D800"):
        store.add_items([("tasks.jsonl:9", "p", ["a", "b\ud800"], None)])
    with pytest.raises(ValueError, match="`instructions` holds U\\+D800"):
        ProjectConfig(questions=["pairwise"], instructions="read \ud800")
    assert store.annotators() == [] and len(store.items()) == 1


def test_text_stored_by_an_older_version_exports_with_a_replacement_character(tmp_path):
    """A project that already holds a lone surrogate (stored before it was refused) still exports,
    every row, the character replaced by U+FFFD and counted; the HTTP export answers 200 too."""
    store = make_project(tmp_path / "p", ["pairwise", "feedback"], [("p", ["a", "b"]), ("q", ["c", "d"])])
    owner = store.add_annotator("olga", "owner")
    ann = store.add_annotator("ann")
    with Running(store) as srv:
        client = srv.client(ann)
        for _ in range(2):
            item = client.next()["item"]["id"]
            assert client.submit(item, {"pairwise": "A", "feedback": "ok"})[0] == 200
    with sqlite3.connect(store.path) as conn:  # what an older version let in
        conn.execute(
            "UPDATE submissions SET answer = ? WHERE id = 1", (json.dumps({"feedback": "bad \ud800 x"}),)
        )
    rows, report = export_rows(store, "judgments")
    assert len(rows) == 2 and report.repaired == 1
    assert rows[0]["answer"]["feedback"] == "bad \ufffd x"
    assert "1 texts held a lone surrogate" in report.summary()
    out = tmp_path / "j.jsonl"
    assert main(["label", "export", str(tmp_path / "p"), "--format", "judgments", "--output", str(out)]) == 0
    assert len(out.read_text(encoding="utf-8").splitlines()) == 2
    assert json.loads(out.with_suffix(".report.json").read_text())["repaired_texts"] == 1
    with Running(store) as srv:
        status, headers, body = srv.client(owner).request("GET", "/api/export?format=judgments")
    assert status == 200 and len(body.splitlines()) == 2
    assert json.loads(headers["x-export-report"])["repaired_texts"] == 1


def test_a_failed_export_leaves_no_file_or_the_earlier_one(tmp_path):
    out = tmp_path / "exports" / "pairs.jsonl"
    write_export([{"prompt": "p", "chosen": "a", "rejected": "b"}], out)
    earlier = out.read_bytes()
    with pytest.raises(ValueError, match="Out of range float values"):  # a NaN half-way through
        write_export([{"prompt": "q", "chosen": "c", "rejected": "d"}, {"weight": float("nan")}], out)
    assert out.read_bytes() == earlier
    assert sorted(p.name for p in out.parent.iterdir()) == ["pairs.jsonl"]  # no temporary file left
    fresh = tmp_path / "fresh.jsonl"
    with pytest.raises(ValueError):
        write_export([{"a": 1}, {"b": float("inf")}], fresh)
    assert not fresh.exists() and list(tmp_path.glob(".fresh*")) == []


@pytest.mark.slow
def test_the_command_line_refuses_unstorable_text_before_creating_anything(tmp_path):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(json.dumps({"prompt": "p", "completions": ["a", "b"]}) + "\n")
    bad_tasks = tmp_path / "bad.jsonl"
    bad_tasks.write_text('{"prompt": "p", "completions": ["a", "b \\ud800"]}\n')
    proc = rlhf("label", "init", str(tmp_path / "p1"), "--tasks", str(bad_tasks), "--type", "pairwise")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"error: {bad_tasks}:1: field `completions[1]`: holds U+D800 at character 2, half of a UTF-16 "
        "surrogate pair with no other half (a broken \\u escape): not text that can be stored or read back"
    ]
    # Bytes that are not UTF-8 in an argument reach Python as lone surrogates.
    owner = subprocess.run(
        [
            RLHF.encode(),
            b"label",
            b"init",
            str(tmp_path / "p2").encode(),
            b"--tasks",
            str(tasks).encode(),
            b"--type",
            b"pairwise",
            b"--owner",
            b"ol\xffga",
        ],
        capture_output=True,
    )
    assert owner.returncode == 2 and owner.stderr.decode().startswith(
        "error: the argument `owner` holds U+DCFF"
    )
    assert not (tmp_path / "p1").exists() and not (tmp_path / "p2").exists()
    assert (
        rlhf("label", "init", str(tmp_path / "p3"), "--tasks", str(tasks), "--type", "pairwise").returncode
        == 0
    )
    added = subprocess.run(
        [RLHF.encode(), b"label", b"add-annotator", str(tmp_path / "p3").encode(), b"bob", b"b\xffb"],
        capture_output=True,
    )
    assert added.returncode == 2 and b"`name 2` holds U+DCFF" in added.stderr
    names = (
        sqlite3.connect(tmp_path / "p3" / "label.db")
        .execute("SELECT name FROM annotators ORDER BY id")
        .fetchall()
    )
    assert names == [("owner",)]  # all of a command's names or none
    several = rlhf("label", "add-annotator", str(tmp_path / "p3"), "bob", "cy")
    assert several.returncode == 0 and several.stdout.count("login link:") == 2, several.stderr
    again = rlhf("label", "add-annotator", str(tmp_path / "p3"), "dee", "cy")
    assert again.returncode == 2 and again.stderr.strip().splitlines() == [
        f"error: an annotator named 'cy' already exists in {tmp_path / 'p3'}; nothing was added"
    ]
    names = (
        sqlite3.connect(tmp_path / "p3" / "label.db")
        .execute("SELECT name FROM annotators ORDER BY id")
        .fetchall()
    )
    assert names == [("owner",), ("bob",), ("cy",)]
