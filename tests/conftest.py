"""Shared test fixtures: the real public files in ../shared, a throwaway PostgreSQL server, small helpers."""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RLHF_SHARED_DIR", REPO.parent / "shared"))
FIXTURES = Path(__file__).resolve().parent / "fixtures"
_databases = itertools.count()


SLOW_FIXTURES = {"pg_server", "pg_url", "browser", "planted"}
"""Fixtures that start a process (PostgreSQL, Chromium) or train a model (`planted`) once for many
tests: every test that uses one is marked slow, whichever of them happens to start it."""


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


OUR_PROGRAMS = {
    "python",
    "python3",
    "torchrun",
    "rlhf",
    "chromium",
    "node",
    "initdb",
    "pg_ctl",
    "postgres",
    "runuser",
}
"""Programs a test starts to exercise the project (its CLI, torchrun, the browser and its driver,
PostgreSQL); libraries' one-off probes (`uname`, `fc-list` building a font cache) are not counted."""


def _our_program(command) -> bool:
    program = Path(str(command[0] if isinstance(command, list | tuple) else str(command).split()[0]))
    return program.parent == Path(sys.executable).parent or program.name in OUR_PROGRAMS


@pytest.fixture(autouse=True)
def _fast_tier_guard(request, monkeypatch):
    """The fast tier (`make test-fast`, `-m "not slow"`) is what a contributor runs while editing:
    a test that trains a model (takes an optimizer step) or starts a process must be marked
    `@pytest.mark.slow`, and one that is not fails here saying so."""
    if request.node.get_closest_marker("slow"):
        yield
        return
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    def refuse(what: str):
        raise AssertionError(
            f"{request.node.nodeid} {what}: mark it @pytest.mark.slow (see tests/conftest.py)"
        )

    def no_step(*_args):
        refuse("takes an optimizer step")

    start = subprocess.Popen.__init__

    def no_process(self, *args, **kwargs):
        command = args[0] if args else kwargs.get("args")
        if _our_program(command):
            refuse(f"starts a process ({command!r})")
        start(self, *args, **kwargs)  # a library's own probe (`uname -p`, `fc-list`): not a test's process

    handle = register_optimizer_step_pre_hook(no_step)
    monkeypatch.setattr(subprocess.Popen, "__init__", no_process)
    try:
        yield
    finally:
        handle.remove()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.fail(
            f"../shared not found at {SHARED}: the tests read the public files and the tiny model a "
            "checkout of this project keeps beside it (set RLHF_SHARED_DIR to use another place)"
        )
    return SHARED


@pytest.fixture(scope="session")
def tinystories_path(shared_dir: Path) -> Path:
    return shared_dir / "models" / "tinystories-260k"


@pytest.fixture(scope="session")
def tinystories_tokenizer(tinystories_path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tinystories_path)


@pytest.fixture(scope="session")
def browser():
    """A real headless Chromium (Playwright), shared by the browser tests; missing is a failure, not a skip."""
    from rlhf.report.browser import chromium

    try:
        with chromium() as launched:
            yield launched
    except FileNotFoundError as err:
        pytest.fail(str(err))


@pytest.fixture()
def fixtures_dir() -> Path:
    return FIXTURES


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago."""
    return _free_port()


@pytest.fixture(scope="session")
def pg_server():
    """A PostgreSQL server of its own (trust auth, 127.0.0.1 only); yields the URL of its `postgres` db."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.fail(
            "PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb): "
            "scripts/setup.sh installs Debian's `postgresql` package"
        )
    bindir = Path(found[-1]).parent
    as_postgres = os.geteuid() == 0  # initdb refuses to run as root
    prefix = ["runuser", "-u", "postgres", "--"] if as_postgres else []
    root = Path(
        tempfile.mkdtemp(prefix="rlhf-pg-")
    )  # not under pytest's 0700 basetemp: postgres must reach it
    data, sockets, log = root / "data", root / "sockets", root / "server.log"
    sockets.mkdir()
    if as_postgres:
        for path in (root, sockets):
            shutil.chown(path, "postgres", "postgres")

    def run(*args: str) -> None:
        proc = subprocess.run([*prefix, *args], cwd=root, capture_output=True, text=True, timeout=120)
        log_text = log.read_text() if log.exists() else ""
        assert proc.returncode == 0, f"{args[0]} failed: {proc.stdout}{proc.stderr}{log_text}"

    port = _free_port()
    run(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8")
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1"
    run(str(bindir / "pg_ctl"), "-w", "-D", str(data), "-l", str(log), "-o", options, "start")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            cwd=root, capture_output=True, timeout=120,
        )  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture()
def pg_url(pg_server) -> str:
    """The URL of a new, empty database."""
    import psycopg

    name = f"label_test_{os.getpid()}_{next(_databases)}"
    with psycopg.connect(f"{pg_server}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"{pg_server}/{name}"
