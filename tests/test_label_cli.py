"""`rlhf label` as a user runs it: init from candidates, add annotators, serve (killed mid-load and
restarted), stats, export, and one-line errors."""

from __future__ import annotations

import http.client
import json
import re
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from label_helpers import Client

RLHF = str(Path(sys.executable).with_name("rlhf"))


def rlhf(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([RLHF, *args], capture_output=True, text=True, timeout=300)


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


def token_of(output: str) -> str:
    return re.search(r"token=([\w-]+)", output).group(1)


def start_server(project: Path, port: int = 0) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [RLHF, "label", "serve", str(project), "--port", str(port), "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    line = proc.stdout.readline()  # printed once the socket listens
    match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
    assert match, line + proc.stderr.read()
    return proc, int(match.group(1))


@pytest.mark.slow
def test_init_add_stats_export_and_errors(tmp_path):
    rows = [
        {"prompt": f"Question {i}?", "completions": [f"a{i}", f"b{i}", f"c{i}", f"a{i}"]} for i in range(3)
    ]
    tasks = write_jsonl(tmp_path / "cands.jsonl", rows)
    project = tmp_path / "proj"
    proc = rlhf("label", "init", str(project), "--tasks", tasks, "--type", "pairwise", "--overlap", "2")
    assert proc.returncode == 0, proc.stderr
    # 4 completions -> 6 pairs per row, one of them identical (a, a): 5 items per row.
    assert "15 items (0 gold) from 3 rows; left out: 3 pairs of identical completions" in proc.stdout
    owner = token_of(proc.stdout)
    proc = rlhf("label", "add-annotator", str(project), "ann", "--url", "http://labels.example:9000")
    assert proc.returncode == 0 and "http://labels.example:9000/login?token=" in proc.stdout
    again = rlhf("label", "add-annotator", str(project), "ann")
    assert again.returncode == 2 and "already exists" in again.stderr
    stats = rlhf("label", "stats", str(project))
    assert stats.returncode == 0 and "submissions: 0 of 30 needed" in stats.stdout
    export = rlhf("label", "export", str(project), "--format", "pairs")
    assert export.returncode == 0
    assert "0 rows from 0 of 15 items; left out: 15 without judgments" in export.stdout
    report = json.loads((project / "exports" / "pairs-majority.report.json").read_text())
    assert report["left_out"] == {"without judgments": 15}
    wrong = rlhf("label", "export", str(project), "--format", "ratings")
    assert wrong.returncode == 2 and "needs one of the questions rating" in wrong.stderr
    # Bad input: one line, naming file, line and field.
    bad = write_jsonl(
        tmp_path / "bad.jsonl", [{"prompt": "Q", "completions": ["x", "y"], "gold": {"pairwise": "C"}}]
    )
    proc = rlhf("label", "init", str(tmp_path / "p2"), "--tasks", bad, "--type", "pairwise")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "bad.jsonl:1" in proc.stderr and "`gold`" in proc.stderr and "one of A, B" in proc.stderr
    assert not (tmp_path / "p2").exists()  # nothing created from a bad file
    proc = rlhf("label", "init", str(tmp_path / "p3"), "--tasks", tasks, "--type", "pairwise,sorting")
    assert proc.returncode == 2 and "questions must be some of" in proc.stderr
    assert rlhf("label", "stats", str(tmp_path / "nowhere")).returncode == 2
    del owner


@pytest.mark.slow
def test_server_killed_mid_load_loses_no_acknowledged_submission(tmp_path):
    rows = [{"prompt": f"Q{i}", "completions": [f"yes {i}", f"no {i}"]} for i in range(200)]
    tasks = write_jsonl(tmp_path / "cands.jsonl", rows)
    project = tmp_path / "proj"
    assert (
        rlhf(
            "label", "init", str(project), "--tasks", tasks, "--type", "pairwise", "--overlap", "2"
        ).returncode
        == 0
    )
    tokens = [token_of(rlhf("label", "add-annotator", str(project), f"a{i}").stdout) for i in range(8)]
    server, port = start_server(project)
    acknowledged: list[int] = []
    lock = threading.Lock()
    enough = threading.Event()  # set when the load is well under way: time to kill the server
    back = threading.Event()  # set once the restarted server listens
    errors: list[str] = []

    def work(token: str) -> None:
        try:
            run(token)
        except Exception as err:  # noqa: BLE001 (reported by the test)
            errors.append(repr(err))

    def run(token: str) -> None:
        client = Client(port, token)
        done = 0
        while done < 30:
            try:
                item = client.next()["item"]
                status, data = client.submit(item["id"], {"pairwise": "A"})
            except (OSError, http.client.HTTPException):  # refused, reset, or cut mid-answer
                back.wait(timeout=120)  # the server is down: wait for it, then carry on
                client = Client(port, token)
                continue
            if status != 200:
                errors.append(f"{status} {data}")
                return
            with lock:
                acknowledged.append(data["submission"])
                if len(acknowledged) >= 80:
                    enough.set()
            done += 1

    threads = [threading.Thread(target=work, args=(t,)) for t in tokens]
    for t in threads:
        t.start()
    assert enough.wait(timeout=120)
    server.send_signal(signal.SIGKILL)
    server.wait()
    with lock:
        at_kill = len(acknowledged)
    server, _ = start_server(project, port)
    back.set()
    for t in threads:
        t.join(timeout=300)
    server.send_signal(signal.SIGTERM)
    assert server.wait(timeout=60) == 0
    assert not errors, errors[:3]
    conn = sqlite3.connect(project / "label.db")
    stored = {row[0] for row in conn.execute("SELECT id FROM submissions WHERE undone = 0")}
    conn.close()
    assert at_kill < 8 * 30 and len(acknowledged) == 8 * 30
    assert set(acknowledged) <= stored  # every acknowledged submission survived the kill
    # At most one per annotator was committed while its answer was lost with the server.
    assert len(stored - set(acknowledged)) <= len(tokens)
