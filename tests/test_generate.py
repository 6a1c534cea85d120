"""`rlhf generate`: K distinct completions per prompt, reproducible from a seed, stop strings,
token limits, rendered prompts saved, and output that the data loaders read back.

Sampling tests use the built-in tiny model (random weights: every draw at temperature 1 differs)
and the real pretrained tinystories-260k (readable text, and a greedy output pinned by its README).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rlhf.config import ConfigError, DataConfig, ModelConfig, PromptConfig
from rlhf.config.core import load_config, undocumented_fields
from rlhf.data import Message, PromptRenderer, encode_prompt, inspect_data, load_records, prompts_of
from rlhf.files import write_jsonl_atomic
from rlhf.generate import GenerateConfig, run_generate
from rlhf.generation import (
    SamplingConfig,
    count_repeats,
    generate_samples,
    repeated_indices,
    sample_sequences,
)
from rlhf.models import load_lm, load_tokenizer

RLHF = str(Path(sys.executable).with_name("rlhf"))

PROMPTS = [
    {"prompt": "Once upon a time", "id": "p1"},
    {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tell me a story."}]},
    {"prompt": "The little dog", "id": "p3", "lang": "en"},
]
# From ../shared/models/tinystories-260k/README.md: its greedy story after BOS alone.
TINYSTORIES_GREEDY = (
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. "
    "One day, she saw a big, red ball. She wanted to play with it, but it was too high.\n"
)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture()
def prompts_file(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)


def generate(prompts: Path, output: Path, model: str = "builtin:tiny", prompt=None, data=None, **sampling):
    """`rlhf generate` with `sampling` settings; `samples_per_prompt`, `unique` and `max_retries`
    go to the command's own fields."""
    draws = {
        key: sampling.pop(key) for key in ("samples_per_prompt", "unique", "max_retries") if key in sampling
    }
    cfg = GenerateConfig(
        model=ModelConfig(path=model, dtype="float32"),
        prompt=prompt or PromptConfig(),
        data=DataConfig(path=str(prompts), **(data or {})),
        sampling=SamplingConfig(**{"max_new_tokens": 8, **sampling}),
        output=str(output),
        progress=False,
        **draws,
    )
    return run_generate(cfg)


@pytest.fixture(scope="module")
def tinystories(tinystories_path: Path):
    cfg = ModelConfig(path=str(tinystories_path), dtype="float32")
    tokenizer = load_tokenizer(cfg, padding_side="left")
    return load_lm(cfg, for_training=False, tokenizer=tokenizer), tokenizer


# ----------------------------------------------------------------------------- the required test


def test_4_samples_per_prompt_give_4_distinct_completions_reproducible_from_the_seed(prompts_file, tmp_path):
    first = generate(prompts_file, tmp_path / "a.jsonl", samples_per_prompt=4, seed=7)
    rows = read_jsonl(tmp_path / "a.jsonl")
    assert len(rows) == len(PROMPTS) and first["completions"] == 12 and first["repeats_left"] == 0
    for row in rows:
        assert len(row["completions"]) == 4
        assert len(set(row["completions"])) == 4, row["completions"]
        assert all(isinstance(text, str) for text in row["completions"])
    # Same seed: the same file, byte for byte. Another seed: other completions for every prompt.
    generate(prompts_file, tmp_path / "b.jsonl", samples_per_prompt=4, seed=7)
    assert (tmp_path / "b.jsonl").read_bytes() == (tmp_path / "a.jsonl").read_bytes()
    generate(prompts_file, tmp_path / "c.jsonl", samples_per_prompt=4, seed=8)
    for row, other in zip(rows, read_jsonl(tmp_path / "c.jsonl")):
        assert set(row["completions"]).isdisjoint(other["completions"])
        assert {key: value for key, value in row.items() if key != "completions"} == {
            key: value for key, value in other.items() if key != "completions"
        }


# ----------------------------------------------------------------------------- sampling


def test_unique_redraws_repeats_that_plain_sampling_keeps(tinystories):
    model, tokenizer = tinystories
    # Two new tokens after these prompts: the model's favourite (" were", " was") comes up often.
    ids = [encode_prompt(tokenizer, text) for text in ("Lily and Tom", "The dog")]
    sampling = SamplingConfig(max_new_tokens=2, seed=5)
    plain = generate_samples(model, tokenizer, ids, sampling, per_prompt=4, progress=False)
    assert count_repeats(plain) >= 2
    unique = generate_samples(
        model, tokenizer, ids, sampling, per_prompt=4, unique=True, max_retries=10, progress=False
    )
    assert count_repeats(unique) == 0
    assert all(len({sample.text for sample in group}) == 4 for group in unique)
    # Re-drawing keeps the first occurrences where they were.
    assert [group[0].text for group in unique] == [group[0].text for group in plain]


def test_repeated_indices_by_hand():
    assert repeated_indices(["a", "b", "a", "a", "c", "b"]) == [2, 3, 5]
    assert count_repeats([["x", "x"], ["y"], ["", "", "z"]]) == 2


def test_max_new_tokens_caps_every_completion():
    cfg = ModelConfig(path="builtin:tiny")
    tokenizer = load_tokenizer(cfg, padding_side="left")
    model = load_lm(cfg, for_training=False, tokenizer=tokenizer)
    ids = [
        encode_prompt(tokenizer, "Hello there"),
        encode_prompt(tokenizer, "A much longer prompt, padded less"),
    ]
    samples = sample_sequences(
        model, tokenizer, ids * 4, SamplingConfig(max_new_tokens=5, batch_size=3), progress=False
    )
    assert len(samples) == 8
    assert all(len(sample.token_ids) <= 5 for sample in samples)
    # Random weights rarely pick EOS among 512 tokens: most run to the limit, exactly.
    at_limit = [sample for sample in samples if sample.finish == "length"]
    assert len(at_limit) >= 6 and all(len(sample.token_ids) == 5 for sample in at_limit)
    for sample in samples:
        assert tokenizer.eos_token_id not in sample.token_ids[:-1]


def test_greedy_continues_tinystories_exactly_as_pinned(tinystories_path, tmp_path):
    # Fed the start of its own greedy story, the model must continue with the rest of it.
    head = "Once upon a time, there was a little girl named Lily."
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": head}])
    generate(
        prompts, tmp_path / "out.jsonl", model=str(tinystories_path), prompt=PromptConfig(template="raw"),
        temperature=0.0, max_new_tokens=30,
    )  # fmt: skip
    (row,) = read_jsonl(tmp_path / "out.jsonl")
    assert row["rendered_prompt"] == head
    # 30 tokens of the pinned story; the leading space is kept, so prompt + completion reads right.
    assert row["completions"] == [
        " She loved to play outside in the park. One day, she saw a big, red ball. She"
    ]
    assert TINYSTORIES_GREEDY.startswith(head + row["completions"][0])


def test_stop_strings_cut_before_the_stop_and_end_generation_early(tinystories_path, tmp_path):
    head = "Once upon a time, there was a little girl named Lily."
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": head}])
    summary = generate(
        prompts, tmp_path / "out.jsonl", model=str(tinystories_path), prompt=PromptConfig(template="raw"),
        temperature=0.0, max_new_tokens=60, stop=[" park", "!"],
    )  # fmt: skip
    assert read_jsonl(tmp_path / "out.jsonl")[0]["completions"] == [" She loved to play outside in the"]
    assert summary["hit_max_new_tokens"] == 0


def test_sampled_stops_match_the_unstopped_draws_cut(tinystories):
    # The same seed draws the same tokens; a stop string only ends each sequence where it appears.
    model, tokenizer = tinystories
    ids = [encode_prompt(tokenizer, text) for text in ("Once upon a time", "Tom had a red")]
    settings = {"max_new_tokens": 40, "seed": 3}
    free = generate_samples(model, tokenizer, ids, SamplingConfig(**settings), per_prompt=4, progress=False)
    stopped = generate_samples(
        model, tokenizer, ids, SamplingConfig(**settings, stop=["."]), per_prompt=4, progress=False
    )
    for free_group, stopped_group in zip(free, stopped):
        for whole, cut in zip(free_group, stopped_group):
            assert cut.text == whole.text.split(".")[0]
            assert "." not in cut.text
    ended_early = [s for group in stopped for s in group if s.finish == "stop"]
    assert len(ended_early) >= 4
    assert all(len(sample.token_ids) < 40 for sample in ended_early)


# ----------------------------------------------------------------------------- prompts and output


def test_rendered_prompts_are_saved_for_instruction_chat_and_few_shot(prompts_file, tmp_path):
    shots = write_jsonl(
        tmp_path / "shots.jsonl",
        [
            {"prompt": "Name a fruit.", "completion": "An apple."},
            {"prompt": "Name a color.", "completion": "Red."},
        ],
    )
    tokenizer = load_tokenizer(ModelConfig(), padding_side="left")
    for prompt_cfg in (
        PromptConfig(),  # text -> instruction template, messages -> the tiny model's chat template
        PromptConfig(template="instruction", few_shot_path=str(shots), few_shot_count=2),
        PromptConfig(template="chat", few_shot_path=str(shots), system_prompt="You are kind."),
    ):
        generate(prompts_file, tmp_path / "out.jsonl", prompt=prompt_cfg, samples_per_prompt=2)
        renderer = PromptRenderer(prompt_cfg, tokenizer)
        rows = read_jsonl(tmp_path / "out.jsonl")
        for row, record in zip(rows, prompts_of(load_records(prompts_file))):
            assert row["rendered_prompt"] == renderer.render(record.prompt)
    # Spot checks of what the three layouts look like.
    instruction = "### Instruction:\n{}\n\n### Response:\n"
    assert rows[0]["rendered_prompt"].startswith(
        "<s><|system|>\nYou are kind.</s><|user|>\nName a fruit.</s>"
    )
    assert rows[0]["rendered_prompt"].endswith("<|user|>\nOnce upon a time</s><|assistant|>\n")
    generate(prompts_file, tmp_path / "plain.jsonl")
    plain = read_jsonl(tmp_path / "plain.jsonl")
    assert plain[0]["rendered_prompt"] == instruction.format("Once upon a time")
    assert (
        plain[1]["rendered_prompt"]
        == "<s><|system|>\nBe brief.</s><|user|>\nTell me a story.</s><|assistant|>\n"
    )


def test_output_is_candidates_data_with_the_prompt_rows_fields(prompts_file, tmp_path):
    output = tmp_path / "runs" / "gen" / "out.jsonl"  # the directory is made
    generate(prompts_file, output, samples_per_prompt=3)
    rows = read_jsonl(output)
    assert list(rows[0]) == ["prompt", "completions", "rendered_prompt", "source", "id"]
    assert rows[0]["prompt"] == "Once upon a time" and rows[0]["source"] == f"{prompts_file}:1"
    assert rows[1]["prompt"] == PROMPTS[1]["prompt"]  # messages stay messages
    assert (rows[2]["id"], rows[2]["lang"]) == ("p3", "en")

    data = load_records(output)
    assert (data.format, data.kind, len(data.records)) == ("candidates", "candidates", 3)
    assert data.records[1].prompt == (Message("system", "Be brief."), Message("user", "Tell me a story."))
    assert [record.completions for record in data.records] == [row["completions"] for row in rows]
    assert data.records[0].meta["rendered_prompt"] == rows[0]["rendered_prompt"]
    # Any stage that takes prompts takes generate's output back.
    again = prompts_of(load_records(output, expect="prompt"))
    assert [record.prompt for record in again] == [
        record.prompt for record in prompts_of(load_records(prompts_file))
    ]
    assert "samples:  9 completions, 3 per prompt" in inspect_data(output)


def test_long_prompts_lose_their_start_and_are_counted(prompts_file, tmp_path):
    summary = generate(prompts_file, tmp_path / "out.jsonl", data={"max_prompt_length": 6})
    rows = read_jsonl(tmp_path / "out.jsonl")
    assert summary["prompts_cut"] == 3
    tokenizer = load_tokenizer(ModelConfig())
    for row in rows:
        full = len(encode_prompt(tokenizer, row["rendered_prompt"]))
        assert row["prompt_tokens_cut"] == full - 6


def test_failed_write_keeps_the_old_file(tmp_path):
    path = write_jsonl(tmp_path / "out.jsonl", [{"old": True}])
    circular: dict = {}
    circular["self"] = circular
    with pytest.raises(ValueError, match="Circular"):
        write_jsonl_atomic(path, [{"ok": 1}, circular])
    assert read_jsonl(path) == [{"old": True}]
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]  # no temporary file left


# ----------------------------------------------------------------------------- config


def test_config_checks_are_one_line():
    assert undocumented_fields(GenerateConfig) == []
    greedy = SamplingConfig(temperature=0)
    with pytest.raises(ConfigError, match="greedy decoding, which cannot give 4 distinct samples"):
        GenerateConfig(sampling=greedy, samples_per_prompt=4)
    GenerateConfig(sampling=greedy, samples_per_prompt=4, unique=False)  # repeats asked for: allowed
    with pytest.raises(ConfigError, match="`sampling.num_samples` was renamed `samples_per_prompt`"):
        load_config(GenerateConfig, overrides=["sampling.num_samples=4"])
    with pytest.raises(ConfigError, match="`reward_model` was renamed `reward.model`"):
        load_config(GenerateConfig, overrides=["reward_model=rm"])
    with pytest.raises(ConfigError, match=r"`sampling.top_p` must be in \(0, 1\]"):
        load_config(GenerateConfig, overrides=["sampling.top_p=0"])
    with pytest.raises(ConfigError, match="empty string"):
        SamplingConfig(stop=["\n", ""])
    with pytest.raises(ConfigError, match="no prompts given"):
        run_generate(GenerateConfig())


# ----------------------------------------------------------------------------- the command


def rlhf(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([RLHF, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.mark.slow
def test_cli_writes_candidates_and_its_flags_win_over_set(prompts_file, tmp_path):
    config = tmp_path / "generate.yaml"
    config.write_text("samples_per_prompt: 2\nsampling:\n  max_new_tokens: 6\n  seed: 5\n")
    proc = rlhf(
        "generate", "--config", str(config), "--set", "samples_per_prompt=3", "progress=false",
        "--model", "builtin:tiny", "--prompts", str(prompts_file), "--output", "out/c.jsonl",
        "--samples-per-prompt", "4", "--stop", "\n\n", "--stop", "###",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("[generate] 3 prompts x 4 samples = 12 completions in ")
    assert proc.stdout.count("\n") == 1
    output = tmp_path / "out" / "c.jsonl"
    data = load_records(output, expect="prompt")
    assert data.kind == "candidates" and [len(r.completions) for r in data.records] == [4, 4, 4]
    assert all("\n\n" not in text and "###" not in text for r in data.records for text in r.completions)
    assert all(len(set(r.completions)) == 4 for r in data.records)


@pytest.mark.slow
def test_cli_bad_prompts_file_is_one_line_with_status_2(tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "fine"}, {"prompt": ["not a message"]}])
    proc = rlhf("generate", "--prompts", str(bad), "--output", "out.jsonl", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr == (
        f"error: {bad}:2: field `prompt[0]`: expected a message object {{role, content}}, got a string ('not a message')\n"
    )
    assert not (tmp_path / "out.jsonl").exists()
