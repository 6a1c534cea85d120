"""What a training stage leaves in its run directory when things go wrong, for every stage (sft,
reward, dpo, rrhf, ppo), each run in this process through the command line's `main`:

- a full disk: `error: no space left on device writing <path>` on one line, exit status 2, no
  temporary directory left, the last complete checkpoint intact, and no traceback from a writer
  thread (TensorBoard's included). The disk is a real small file system: a tmpfs this test mounts
  where the machine lets it (as root, as on the CI machine); elsewhere ENOSPC is injected at the
  checkpoint's first write (`torch.save`), which the test says in its output.
- a rerun without `--resume` where a run left checkpoints: refused in one line naming `--resume`
  and `--overwrite`; `--overwrite` starts afresh with the old checkpoints and metrics gone.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from rlhf.cli.main import main
from rlhf.files import DiskFullError, is_disk_full, writing
from rlhf.training.checkpoint import list_checkpoints

ROOT = Path(__file__).resolve().parent.parent
DEMOS = str(ROOT / "src" / "rlhf" / "assets" / "demo" / "demonstrations.jsonl")
PAIRS = str(ROOT / "tests" / "fixtures" / "data" / "public" / "shp.jsonl")
RANKINGS = str(ROOT / "tests" / "fixtures" / "data" / "public" / "nectar.jsonl")
COMMON = ["model.path=builtin:tiny", "data.max_length=64", "logging.progress=false"]
TRAINED = ["batch_size=2", "save_every=1", "keep_checkpoints=null", "eval.fraction=0"]
STAGES = {
    "sft": [f"data.path={DEMOS}", *TRAINED],
    "reward": [f"data.path={PAIRS}", *TRAINED],
    "dpo": [f"data.path={PAIRS}", *TRAINED],
    "rrhf": [f"data.path={RANKINGS}", *TRAINED],
    "ppo": [
        f"data.path={DEMOS}",
        "save_every=1",
        "keep_checkpoints=null",
        "rollout.prompts_per_step=2",
        "rollout.samples_per_prompt=2",
        "minibatch_size=4",
        "rollout.sampling.max_new_tokens=4",
        "reward.function=examples/rewards.py:letter_e",
        "samples_every=0",
    ],
}


def steps(stage: str, n: int) -> str:
    return f"max_steps={n}"


def run(stage: str, out: Path, n: int, *flags: str, tensorboard: bool = True) -> int:
    sets = [*COMMON, *STAGES[stage], steps(stage, n), f"output_dir={out}"]
    if not tensorboard:
        sets.append("logging.tensorboard=false")
    return main([stage, *flags, "--set", *sets])


def blocks(path: Path) -> int:
    """Bytes `path` takes on its file system (allocated blocks: what fills a disk)."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(os.stat(p).st_blocks * 512 for p in files)


@pytest.fixture()
def small_disk(tmp_path):
    """A 64 MiB tmpfs mounted at tmp_path/disk, or None where this machine does not allow it."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        yield None
        return
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


def _fill_to(disk: Path, free: int) -> None:
    """Take up the disk's space but `free` bytes with a ballast file."""
    usage = shutil.disk_usage(disk)
    ballast = usage.free - free
    if ballast > 0:
        fd = os.open(disk / "ballast", os.O_CREAT | os.O_WRONLY)
        try:
            os.posix_fallocate(fd, 0, ballast)
        finally:
            os.close(fd)


@pytest.mark.slow
@pytest.mark.parametrize("stage", list(STAGES))
def test_a_full_disk_is_one_line_and_leaves_the_last_checkpoint(
    stage, small_disk, tmp_path, capsys, monkeypatch
):
    if small_disk is not None:
        # The space of a run with one checkpoint, measured on this disk, plus half a checkpoint:
        # the first checkpoint fits, the second cannot.
        reference = small_disk / "reference"
        assert run(stage, reference, 2) == 0
        checkpoint = blocks(reference / "checkpoints" / "step-000001")
        finals = sum(
            blocks(reference / name) for name in ("model", "policy", "critic") if (reference / name).exists()
        )
        needed = blocks(reference) - finals + checkpoint // 2
        shutil.rmtree(reference)
        _fill_to(small_disk, needed)
        out = small_disk / "run"
    else:
        print("no tmpfs could be mounted here: ENOSPC is injected at the checkpoint's first write")
        import rlhf.training.checkpoint as ckpt

        real, calls = ckpt.torch.save, []

        def full_at_second_checkpoint(obj, path, *args, **kwargs):
            calls.append(path)
            if "step-000002" in str(path):
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(obj, path, *args, **kwargs)

        monkeypatch.setattr(ckpt.torch, "save", full_at_second_checkpoint)
        out = tmp_path / "run"
    capsys.readouterr()
    code = run(stage, out, 4)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and "[WARNING]" not in line]
    assert code == 2, err
    assert lines == [f"error: no space left on device writing {out / 'checkpoints' / 'step-000002'}"], err
    assert [p.name for p in list_checkpoints(out)] == ["step-000001"]
    assert not [p.name for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]
    assert json.loads((out / "checkpoints" / "step-000001" / "trainer_state.json").read_text())["step"] == 1
    if small_disk is not None:
        (small_disk / "ballast").unlink()  # room again: the run goes on from its last checkpoint
        capsys.readouterr()
        assert run(stage, out, 4, "--resume") == 0
        assert "[resume] from" in capsys.readouterr().out


def test_the_three_ways_a_full_disk_is_reported_are_recognised(tmp_path, monkeypatch):
    from safetensors import SafetensorError

    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert is_disk_full(
        SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    )
    short = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 466176 vs 466068")
    assert not is_disk_full(short)  # where it was written is needed to tell
    monkeypatch.setattr("rlhf.files.free_bytes", lambda path: 0)
    assert is_disk_full(short, tmp_path)
    monkeypatch.setattr("rlhf.files.free_bytes", lambda path: 10 << 30)
    assert not is_disk_full(short, tmp_path)  # a short write with room left is some other fault
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    with pytest.raises(DiskFullError) as info, writing(tmp_path / "model"):
        raise OSError(errno.ENOSPC, "No space left on device")
    assert str(info.value) == f"no space left on device writing {tmp_path / 'model'}"
    with pytest.raises(PermissionError), writing(tmp_path / "model"):
        raise PermissionError(errno.EACCES, "Permission denied")


@pytest.mark.slow
@pytest.mark.parametrize("stage", list(STAGES))
def test_a_rerun_without_resume_never_overwrites_checkpoints(stage, tmp_path, capsys):
    out = tmp_path / "run"
    assert run(stage, out, 3, tensorboard=False) == 0
    assert [p.name for p in list_checkpoints(out)] == ["step-000001", "step-000002"]
    before = {p: p.stat().st_mtime_ns for p in (out / "checkpoints").rglob("*")}
    (out / "summary.json").unlink()  # as a run killed after its checkpoint at step 2 leaves it
    capsys.readouterr()
    assert run(stage, out, 3, tensorboard=False) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {out} holds the checkpoints of an unfinished run (newest step-000002): continue it with "
        "--resume, or start over with --overwrite (deletes them)"
    ]
    assert {p: p.stat().st_mtime_ns for p in (out / "checkpoints").rglob("*")} == before
    assert run(stage, out, 3, "--resume", tensorboard=False) == 0
    assert "at step 2" in capsys.readouterr().out
    assert run(stage, out, 3, tensorboard=False) == 2
    assert "holds the checkpoints of a finished run (newest step-000002): start over with --overwrite" in (
        capsys.readouterr().err
    )
    assert run(stage, out, 2, "--overwrite", tensorboard=False) == 0
    assert [p.name for p in list_checkpoints(out)] == ["step-000001"]  # the old ones went first
    logged = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert max(logged) == 2 and logged == sorted(logged)  # nothing of the earlier runs' 3 steps


@pytest.mark.slow
@pytest.mark.filterwarnings(
    "error::pytest.PytestUnhandledThreadExceptionWarning"
)  # a thread's traceback fails
def test_metrics_writers_stop_on_a_full_disk_in_one_line_and_close_quietly(small_disk, capfd):
    """The metrics file or TensorBoard's writer thread meets the full disk first: either way the
    logger raises one `DiskFullError` naming its file, the thread prints no traceback of its own,
    and closing after it says nothing more."""
    from rlhf.tracking import MetricsLogger

    if small_disk is None:
        pytest.skip("needs a small file system (a tmpfs mount) for a write that really fails")
    _fill_to(small_disk, 16 << 10)
    logger = MetricsLogger(small_disk / "run")
    with pytest.raises(DiskFullError) as info, logger:
        for step in range(1, 100_000):
            logger.log(step, {f"train/metric_{i}": float(i) for i in range(50)})
            logger._writer.flush()  # what TensorBoard's thread does every two minutes
    assert info.value.path in (small_disk / "run" / "metrics.jsonl", small_disk / "run" / "tensorboard")
    logger.close()  # already closed: nothing
    assert "Traceback" not in capfd.readouterr().err
