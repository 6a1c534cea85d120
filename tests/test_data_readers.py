"""Reading rows from every source type, with the line each row came from."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlhf.config import DataConfig
from rlhf.data import DataError, Message, Source, iter_rows, load_records, read_rows


@pytest.fixture()
def data_dir(fixtures_dir: Path) -> Path:
    return fixtures_dir / "data"


PAIRS = [
    {"prompt": "Best pet?", "chosen": "A dog.", "rejected": "A rock.", "margin": 2.0},
    {"prompt": "Sky colour?", "chosen": "Blue.", "rejected": "Green.", "margin": None},
    {"prompt": "Two plus two?", "chosen": "Four.", "rejected": "Five.", "margin": 1.0},
]


def test_jsonl_lines_skip_blanks(data_dir):
    rows = list(read_rows(data_dir / "prompt_completion.jsonl"))
    assert [where.line for where, _ in rows] == [1, 3, 4]
    assert rows[0][1] == {"prompt": "What is 2 + 2?", "completion": "4", "id": "a1"}


def test_jsonl_with_byte_order_mark(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"text": "hello"}\n')
    assert list(read_rows(path)) == [(Source(str(path), 1), {"text": "hello"})]


def test_json_array_element_lines(data_dir):
    rows = list(read_rows(data_dir / "alpaca.json"))
    assert [where.line for where, _ in rows] == [2, 7, 12]
    assert rows[2][1] == {"instruction": "Say yes.", "output": "Yes"}


def test_json_file_holding_jsonl(data_dir):
    data = load_records(data_dir / "jsonl_named.json")
    assert data.format == "prompt_completion"
    assert [(r.prompt, r.completion, r.source.line) for r in data.records] == [("A?", "B", 1), ("C?", "D", 2)]


def test_empty_json_array(tmp_path):
    path = tmp_path / "empty.json"
    path.write_text("[ ]\n")
    assert list(read_rows(path)) == []
    with pytest.raises(DataError, match="no records to use"):
        load_records(path)


def test_csv_lines_quotes_and_blank_rows(data_dir):
    data = load_records(data_dir / "pairwise.csv")
    assert data.format == "pairwise"
    assert [(r.prompt, r.chosen, r.rejected, r.margin, r.source.line) for r in data.records] == [
        ("What is up?", "The sky.", "Nothing.", 1.0, 2),
        ("Comma, please", "Yes, here", "No", None, 3),
        ("Quote?", 'She said "hi"', "Silence", 0.5, 5),
    ]


def test_csv_json_cells(data_dir):
    data = load_records(data_dir / "ranking.csv")
    assert data.format == "ranking"
    first, second, third = data.records
    assert (first.completions, first.ranks, first.source.line) == (["Vast and blue.", "Wet."], [1, 2], 2)
    assert (second.prompt, second.ranks, second.source.line) == ('Say "thanks".', [2, 1], 3)
    # The second row's note spans lines 3-4, so the third row starts on line 5.
    assert second.meta == {"note": "multi\nline note"}
    assert (third.ranks, third.source.line) == ([0.5, 0.5, 1], 5)
    # A cell that only looks like JSON stays text.
    assert third.meta == {"note": "[not json"}


def test_csv_long_cell(tmp_path):
    path = tmp_path / "long.csv"
    long_text = "word " * 40_000  # 200,000 characters: over the csv module's default cell limit
    path.write_text(f"prompt,completion\nWrite a lot.,{long_text}\n")
    (record,) = load_records(path).records
    assert record.completion == long_text


def test_json_array_not_utf8_names_line(tmp_path):
    path = tmp_path / "latin.json"
    path.write_bytes(b'[\n  {"text": "a"},\n  {"text": "caf\xe9"}\n]\n')
    with pytest.raises(DataError) as info:
        list(read_rows(path))
    assert str(info.value) == f"{path}:3: not UTF-8 text (byte 0xe9 at byte 16); re-save the file as UTF-8"


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "pairs.parquet"
    pq.write_table(pa.Table.from_pylist(PAIRS), path)
    data = load_records(path)
    assert data.format == "pairwise"
    assert [(r.chosen, r.margin, r.source.line) for r in data.records] == [
        ("A dog.", 2.0, 1),
        ("Blue.", None, 2),
        ("Four.", 1.0, 3),
    ]


def test_parquet_chat_lists(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}]
    path = tmp_path / "chat.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    (record,) = load_records(path).records
    assert (record.prompt, record.completion) == ((Message("user", "Hi"),), "Hello")


def test_unreadable_parquet(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=r"broken.parquet: not a readable parquet file"):
        list(read_rows(path))


def test_datasets_directory_and_splits(tmp_path):
    import datasets

    single = tmp_path / "single"
    datasets.Dataset.from_list(PAIRS).save_to_disk(str(single))
    data = load_records(single)
    assert data.format == "pairwise"
    assert [(r.prompt, r.source) for r in data.records][1] == ("Sky colour?", Source(str(single), 2))

    both = tmp_path / "dict"
    splits = {"train": datasets.Dataset.from_list(PAIRS), "test": datasets.Dataset.from_list(PAIRS[:1])}
    datasets.DatasetDict(splits).save_to_disk(str(both))
    assert len(load_records(both).records) == 3
    assert len(load_records(DataConfig(path=str(both), split="test")).records) == 1
    with pytest.raises(DataError, match=r"split `valid` not found \(available: test, train\)"):
        load_records(DataConfig(path=str(both), split="valid"))


def test_directory_that_is_not_a_dataset(tmp_path):
    (tmp_path / "README.md").write_text("notes\n")  # not data
    with pytest.raises(DataError) as info:
        list(read_rows(tmp_path))
    assert str(info.value) == (
        f"{tmp_path}: the directory holds no data files (.jsonl, .ndjson, .json, .csv, .parquet)"
    )


@pytest.mark.slow
def test_a_local_copy_of_a_hub_dataset_reads_the_subset_asked_for(tmp_path, monkeypatch):
    """A hub dataset's files as downloaded (its README names a configuration per folder, as
    Anthropic/hh-rlhf's `harmless-base` and `helpful-base`): `data.subset` picks one; without it, one
    line that lists them."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    repo = tmp_path / "hh-rlhf"
    configs = ""
    for subset, count in (("helpful-base", 1), ("harmless-base", 2)):
        (repo / subset).mkdir(parents=True)
        rows = [{"prompt": f"q{i}", "chosen": "yes", "rejected": "no"} for i in range(count)]
        (repo / subset / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        configs += (
            f"- config_name: {subset}\n  data_files:\n  - split: train\n    path: {subset}/train.jsonl\n"
        )
    (repo / "README.md").write_text(f"---\nconfigs:\n{configs}---\n")
    data = load_records(DataConfig(path=str(repo), subset="harmless-base"))
    assert (data.format, len(data.records)) == ("pairwise", 2)
    with pytest.raises(
        DataError, match=r"Config name is missing.*'helpful-base', 'harmless-base'.*; set `data.subset`$"
    ):
        load_records(DataConfig(path=str(repo)))


def test_missing_file_is_one_clear_line(tmp_path):
    path = tmp_path / "data" / "pairs.jsonl"
    with pytest.raises(DataError) as info:
        load_records(path)
    assert str(info.value) == f"{path}: file not found"


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello\n")
    with pytest.raises(DataError, match=r"notes.txt: unsupported file type `.txt`"):
        list(read_rows(path))


@pytest.mark.slow
def test_hub_id_offline_fails_in_one_line():
    # HF_HUB_OFFLINE is read when huggingface_hub is imported, so the load runs in a fresh process.
    code = (
        "from rlhf.data import load_records, DataError\n"
        "try:\n"
        "    load_records('someone/no-such-dataset')\n"
        "except DataError as err:\n"
        "    print(err)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout + result.stderr
    assert lines[0].startswith(
        "someone/no-such-dataset: no such local file or directory, and loading it as a hub dataset failed: "
    )
    assert "Hub" in lines[0]


def test_iter_rows_yields_row_errors_in_place(data_dir):
    results = list(iter_rows(data_dir / "bad" / "invalid_json.jsonl"))
    assert [where.line for where, _ in results] == [1, 2, 3, 4]
    assert isinstance(results[2][1], DataError)
    assert results[3][1] == {"prompt": "g", "completion": "h"}


def _compress(suffix: str, raw: bytes) -> bytes:
    import bz2
    import gzip
    import lzma

    import zstandard

    compress = {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress,
                ".zst": zstandard.ZstdCompressor().compress}[suffix]  # fmt: skip
    return compress(raw)


@pytest.mark.parametrize("suffix", [".gz", ".bz2", ".xz", ".zst"])
@pytest.mark.parametrize("name", ["hh.jsonl", "alpaca.json", "pairwise.csv"])
def test_compressed_files_read_as_the_plain_ones(data_dir, tmp_path, name, suffix):
    """Anthropic HH ships as `train.jsonl.gz`: every compressed JSONL, JSON and CSV gives the rows,
    lines and format of the plain file."""
    from rlhf.data import load_records

    plain = data_dir / name
    packed = tmp_path / f"{name}{suffix}"
    packed.write_bytes(_compress(suffix, plain.read_bytes()))
    want, got = load_records(plain), load_records(packed)
    assert got.format == want.format and got.records == [
        type(r)(**{**r.__dict__, "source": type(r.source)(str(packed), r.source.line)}) for r in want.records
    ]


def test_a_broken_compressed_file_is_one_line(tmp_path):
    import gzip

    from rlhf.data import DataError, load_records

    rows = "".join(f'{{"prompt": "q{i}", "chosen": "a", "rejected": "b"}}\n' for i in range(50000)).encode()
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(gzip.compress(rows)[:-64])
    with pytest.raises(
        DataError, match=r"cut\.jsonl\.gz: cannot decompress past line \d+: Compressed file ended"
    ):
        load_records(cut)
    fake = tmp_path / "fake.jsonl.gz"
    fake.write_bytes(rows[:100])
    with pytest.raises(DataError, match=r"fake\.jsonl\.gz: cannot decompress: Not a gzipped file"):
        load_records(fake)
    with pytest.raises(DataError, match=r"unsupported file type `\.parquet\.gz`"):
        (tmp_path / "x.parquet.gz").write_bytes(b"x")
        load_records(tmp_path / "x.parquet.gz")
