"""Tokenization worked out by hand with the tinystories tokenizer (BOS <s>=1 added automatically,
EOS </s>=2 not added, pad <unk>=0).

    "Once upon a time" -> [1, 403, 407, 261, 378]        (with BOS)
    "a b c d e f"      -> [261, 268, 280, 279, 344, 272]  (without special tokens)
"""

from __future__ import annotations

import copy

import pytest
import torch

from rlhf.data import (
    IGNORE_INDEX,
    EncodedExample,
    LoadReport,
    Message,
    TruncationStats,
    encode_example,
    load_records,
    pad_batch,
    render_prompt,
)

PROMPT = "Once upon a time"
PROMPT_IDS = [1, 403, 407, 261, 378]
COMPLETION = "a b c d e f"
COMPLETION_IDS = [261, 268, 280, 279, 344, 272]
M = IGNORE_INDEX


def test_tokenizer_is_what_the_hand_work_assumes(tinystories_tokenizer):
    tok = tinystories_tokenizer
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (1, 2, 0)
    assert tok(PROMPT)["input_ids"] == PROMPT_IDS
    assert tok(COMPLETION, add_special_tokens=False)["input_ids"] == COMPLETION_IDS


def test_prompt_masked_bos_once_eos_appended(tinystories_tokenizer):
    ex = encode_example(tinystories_tokenizer, PROMPT, COMPLETION, max_length=64)
    assert ex.input_ids == PROMPT_IDS + COMPLETION_IDS + [2]
    assert ex.labels == [M, M, M, M, M] + COMPLETION_IDS + [2]
    assert (ex.prompt_len, ex.truncated, ex.completion_truncated) == (5, False, False)
    assert ex.input_ids.count(1) == 1


def test_no_eos_when_not_asked(tinystories_tokenizer):
    ex = encode_example(tinystories_tokenizer, PROMPT, COMPLETION, max_length=64, add_eos=False)
    assert ex.input_ids == PROMPT_IDS + COMPLETION_IDS
    assert ex.labels[-1] == 272


def test_plain_text_learns_everything_but_bos(tinystories_tokenizer):
    ex = encode_example(tinystories_tokenizer, "", COMPLETION, max_length=64)
    assert ex.input_ids == [1] + COMPLETION_IDS + [2]
    assert ex.labels == [M] + COMPLETION_IDS + [2]
    assert ex.prompt_len == 1


def test_prompt_cut_from_the_left_keeps_bos_and_completion(tinystories_tokenizer):
    # 10 tokens: BOS + 7 completion tokens (with EOS) leave 2 for the prompt: its last two.
    ex = encode_example(tinystories_tokenizer, PROMPT, COMPLETION, max_length=10)
    assert ex.input_ids == [1, 261, 378] + COMPLETION_IDS + [2]
    assert ex.labels == [M, M, M] + COMPLETION_IDS + [2]
    assert (ex.prompt_len, ex.truncated, ex.completion_truncated) == (3, True, False)


def test_max_prompt_length_counts_bos(tinystories_tokenizer):
    ex = encode_example(tinystories_tokenizer, PROMPT, COMPLETION, max_length=64, max_prompt_length=3)
    assert ex.input_ids[:3] == [1, 261, 378]
    assert (ex.prompt_len, ex.truncated) == (3, True)


def test_completion_alone_too_long_is_cut_at_its_end(tinystories_tokenizer):
    ex = encode_example(tinystories_tokenizer, PROMPT, COMPLETION, max_length=5)
    assert ex.input_ids == [1, 261, 268, 280, 279]
    assert ex.labels == [M, 261, 268, 280, 279]
    assert (ex.prompt_len, ex.truncated, ex.completion_truncated) == (1, True, True)


def test_exact_fit_is_not_truncated(tinystories_tokenizer):
    ex = encode_example(tinystories_tokenizer, PROMPT, COMPLETION, max_length=12)
    assert len(ex.input_ids) == 12
    assert ex.truncated is False


def test_chat_template_with_bos_in_text_gives_one_bos(tinystories_tokenizer):
    tok = copy.deepcopy(tinystories_tokenizer)
    tok.chat_template = (
        "{% for m in messages %}<s>{{ m.role }}: {{ m.content }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant:{% endif %}"
    )
    text = render_prompt((Message("user", "Hi"),), tok)
    assert text == "<s>user: Hi\nassistant:"
    ex = encode_example(tok, text, COMPLETION, max_length=64)
    assert ex.input_ids[0] == 1
    assert ex.input_ids.count(1) == 1


def test_render_prompt_fallback_template(tinystories_tokenizer):
    assert tinystories_tokenizer.chat_template is None
    messages = (Message("system", "Be brief."), Message("user", "Hi"), Message("assistant", "Hello"))
    assert render_prompt(messages, tinystories_tokenizer) == (
        "<|system|>\nBe brief.\n<|user|>\nHi\n<|assistant|>\nHello\n<|assistant|>\n"
    )
    assert render_prompt(messages[:2], tinystories_tokenizer, add_generation_prompt=False) == (
        "<|system|>\nBe brief.\n<|user|>\nHi\n"
    )
    assert render_prompt("raw text", tinystories_tokenizer) == "raw text"


def test_loaded_record_round_trip(tinystories_tokenizer, fixtures_dir):
    record = load_records(fixtures_dir / "data" / "prompt_completion.jsonl").records[0]
    text = render_prompt(record.prompt, tinystories_tokenizer)
    ex = encode_example(tinystories_tokenizer, text, record.completion, max_length=64)
    learned = [i for i in ex.labels if i != M]
    assert learned[-1] == 2
    assert tinystories_tokenizer.decode(learned[:-1]) == "4"


def _example(truncated: bool, completion_truncated: bool = False) -> EncodedExample:
    return EncodedExample([1], [M], 1, truncated, completion_truncated)


def test_truncation_stats_count_records():
    stats = TruncationStats(max_length=512)
    stats.add(_example(False))
    stats.add(_example(True), _example(False))  # a comparison: one of its two sides was cut
    stats.add(_example(False), _example(False))
    assert (stats.total, stats.truncated, stats.completion_truncated) == (3, 1, 0)
    assert stats.summary() == "1 of 3 records truncated to 512 tokens"
    stats.add(_example(True, completion_truncated=True))
    assert stats.summary() == "2 of 4 records truncated to 512 tokens (1 lost the end of their completion)"
    report = LoadReport(path="d.jsonl", format="chat", rows_read=4, records_kept=4, truncation=stats)
    assert report.summary() == (
        "d.jsonl: 4 rows read, 4 records kept (chat); 2 of 4 records truncated to 512 tokens "
        "(1 lost the end of their completion)"
    )


def test_pad_right_for_training():
    batch = pad_batch([[5, 6, 7], [8]], pad_id=0, side="right")
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[5, 6, 7], [8, M, M]]
    assert batch["input_ids"].dtype == torch.long


def test_pad_left_for_generation_with_labels():
    batch = pad_batch([[5, 6, 7], [8, 9]], pad_id=0, side="left", label_sequences=[[M, 6, 7], [M, 9]])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [0, 8, 9]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [0, 1, 1]]
    assert batch["labels"].tolist() == [[M, 6, 7], [M, M, 9]]


def test_pad_batch_rejects_bad_input():
    with pytest.raises(ValueError, match="side must be"):
        pad_batch([[1]], pad_id=0, side="middle")
    with pytest.raises(ValueError, match="at least one sequence"):
        pad_batch([], pad_id=0)
    with pytest.raises(ValueError, match="must match sequences"):
        pad_batch([[1, 2]], pad_id=0, label_sequences=[[1]])
