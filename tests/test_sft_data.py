"""SFT data pieces: the loss math, completion-only labels, packing isolation, the batch stream."""

from __future__ import annotations

import math

import pytest
import torch

from rlhf.config import PromptConfig
from rlhf.data import IGNORE_INDEX, Demonstration, Message, PromptRenderer, Source, load_records
from rlhf.data.examples import collate, encode_demonstrations, to_rows
from rlhf.data.split import split_eval
from rlhf.losses import token_nll
from rlhf.models import build_tiny_model, build_tiny_tokenizer
from rlhf.training.batches import BatchStream

SRC = Source("mem", 1)


def test_token_nll_hand_worked():
    # Vocabulary of 2. Position 0 predicts label[1], position 1 predicts label[2]; label[0] unused.
    # Logits [0, 0] -> p = 1/2 each, NLL = ln 2. Logits [ln 3, 0] -> p(token 0) = 3/4, NLL = ln(4/3).
    logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0], [5.0, 5.0]]])
    labels = torch.tensor([[7, 1, 0]])  # label[0] = 7 is never read
    nll, count = token_nll(logits, labels)
    assert count.item() == 2
    assert nll.item() == pytest.approx(math.log(2) + math.log(4 / 3), rel=1e-6)
    # IGNORE_INDEX drops a target: only ln 2 is left.
    nll, count = token_nll(logits, torch.tensor([[7, 1, IGNORE_INDEX]]))
    assert (nll.item(), count.item()) == (pytest.approx(math.log(2), rel=1e-6), 1)


def _encode(records, completion_only=True, max_length=64, cfg=None):
    tok = build_tiny_tokenizer()
    return encode_demonstrations(records, PromptRenderer(cfg, tok), tok, max_length, None, completion_only)


def test_completion_only_labels_token_by_token():
    tok = build_tiny_tokenizer()
    record = Demonstration("Name a color.", "Blue.", SRC)
    (example,), _ = _encode([record])
    prompt_ids = tok("### Instruction:\nName a color.\n\n### Response:\n")["input_ids"]
    completion_ids = tok("Blue.", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert example.input_ids == prompt_ids + completion_ids
    # Every prompt token is masked, every completion token (and the EOS) is its own target.
    assert example.labels == [IGNORE_INDEX] * len(prompt_ids) + completion_ids
    (full,), _ = _encode([record], completion_only=False)
    assert full.labels == full.input_ids


def test_chat_records_use_the_chat_template_and_mask_the_whole_conversation():
    tok = build_tiny_tokenizer()
    record = Demonstration(
        (Message("user", "hi"), Message("assistant", "hello"), Message("user", "bye")), "ciao", SRC
    )
    (example,), _ = _encode([record])
    text = tok.decode(example.input_ids[: example.prompt_len])
    assert text.endswith("<|user|>\nbye</s><|assistant|>\n") and "<|assistant|>\nhello</s>" in text
    targets = [t for t in example.labels if t != IGNORE_INDEX]
    assert tok.decode(targets) == "ciao</s>"


def test_instruction_template_is_configurable():
    cfg = PromptConfig(instruction_template="Q: {prompt}\nA: ")
    (example,), _ = _encode([Demonstration("2+2?", "4", SRC)], cfg=cfg)
    tok = build_tiny_tokenizer()
    assert tok.decode(example.input_ids, skip_special_tokens=True) == "Q: 2+2?\nA: 4"


def test_packing_keeps_every_example_once_and_masks_boundaries():
    records = [Demonstration(f"q{i}" * (i + 1), f"answer {i}", SRC) for i in range(9)]
    examples, _ = _encode(records, completion_only=False)
    rows = to_rows(examples, max_length=100, packing=True)
    assert len(rows) < len(examples)
    assert all(len(row.input_ids) <= 100 for row in rows)
    assert sorted(n for row in rows for n in row.lengths) == sorted(len(e.input_ids) for e in examples)
    for row in rows:
        start = 0
        for length in row.lengths:
            # The first token of each example is never a target (it would be predicted across the boundary).
            assert row.labels[start] == IGNORE_INDEX
            start += length
    unpacked = to_rows(examples, max_length=100, packing=False)
    assert [row.lengths for row in unpacked] == [[len(e.input_ids)] for e in examples]


def test_collate_positions_restart_per_example():
    examples, _ = _encode([Demonstration("a", "b", SRC), Demonstration("cc", "dd", SRC)])
    rows = to_rows(examples, 64, packing=True)
    assert len(rows) == 1
    batch = collate(rows + to_rows(examples[:1], 64, packing=True), pad_id=0, packed=True)
    assert set(batch) == {"input_ids", "position_ids", "labels"}
    a, b = (len(e.input_ids) for e in examples)
    assert batch["position_ids"][0].tolist() == list(range(a)) + list(range(b))
    # The shorter row's padding is a segment of its own, with no targets.
    assert batch["position_ids"][1].tolist() == list(range(a)) + list(range(b))
    assert (batch["labels"][1, a:] == IGNORE_INDEX).all()


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("which", ["tiny", "tinystories"])
def test_packed_examples_never_attend_to_each_other(attn, which, request):
    """Each example's logits in a packed row equal its logits when run alone.

    use_cache=False as in training: with a KV cache transformers ignores the position restarts."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if which == "tiny":
        model, tok = build_tiny_model(seed=3)
        model.config._attn_implementation = attn
    else:
        path = request.getfixturevalue("tinystories_path")
        model = AutoModelForCausalLM.from_pretrained(path, attn_implementation=attn)
        tok = AutoTokenizer.from_pretrained(path)
    model.eval()
    texts = ["Once upon a time there was a cat.", "The dog ran.", "Lily had a big red ball and she liked it."]
    seqs = [tok(t)["input_ids"] for t in texts]
    packed = torch.tensor([sum(seqs, [])])
    positions = torch.tensor([[p for s in seqs for p in range(len(s))]])
    with torch.no_grad():
        logits = model(input_ids=packed, position_ids=positions, use_cache=False).logits[0]
        start = 0
        for seq in seqs:
            alone = model(input_ids=torch.tensor([seq])).logits[0]
            torch.testing.assert_close(logits[start : start + len(seq)], alone, atol=2e-5, rtol=1e-4)
            start += len(seq)
        # Control: without the restarting positions the later examples do see the earlier ones.
        leaky = model(input_ids=packed, use_cache=False).logits[0]
        assert not torch.allclose(leaky[len(seqs[0]) :], logits[len(seqs[0]) :], atol=1e-3)


def test_batch_stream_shards_match_one_process_and_resume():
    one = BatchStream(10, 4, seed=1)
    two = [BatchStream(10, 2, num_processes=2, process_index=r, seed=1) for r in range(2)]
    it_one, it_two = iter(one), [iter(s) for s in two]
    seen = []
    for _ in range(5):  # 20 items = 2 epochs: the last batch of epoch 0 runs into epoch 1
        batch = next(it_one)
        assert batch == next(it_two[0]) + next(it_two[1])
        seen += batch
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:]) == list(range(10))
    assert seen[:10] != seen[10:]  # each epoch is shuffled anew
    resumed = iter(BatchStream(10, 4, seed=1, start=3))
    assert next(resumed) == one.items(3)


def test_split_eval_is_seeded_and_disjoint():
    records = list(range(20))
    train, held = split_eval(records, 0.25, seed=5)
    assert len(held) == 5 and sorted(train + held) == records
    assert split_eval(records, 0.25, seed=5) == (train, held)
    assert split_eval(records, 0.25, seed=6)[1] != held


def test_alpaca_shared_data_encodes_with_completion_targets(shared_dir):
    data = load_records(shared_dir / "data" / "alpaca_en_demo.json", expect="sft")
    examples, stats = _encode(data.records[:50], max_length=256)
    assert stats.total == 50
    assert all(any(t != IGNORE_INDEX for t in e.labels) for e in examples)
    assert all(e.labels[: e.prompt_len] == [IGNORE_INDEX] * e.prompt_len for e in examples)
