"""Encoder-decoder policies (T5, BART) read where they predict, checked by hand: every read-out of the
project (SFT's loss, DPO/RRHF's sequence log-probs, PPO's policy pass, evaluation's log-probs) equals
a teacher-forced computation written here one example at a time, unpadded; greedy generation writes
what the teacher-forced model ranks first; reward models and critics on encoder-decoders read where
transformers' own classifier reads; and an encoder-decoder is never loaded as a causal LM.

The models are tiny and random but *peaked* (large initial weights, see `tiny_models.INIT`): a
read-out one position off moves log-probs hundreds of times the tolerances below."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rlhf.config import ModelConfig
from rlhf.models.load import load_lm
from rlhf.models.seq2seq import start_token
from tiny_models import SEQ2SEQ, build_seq2seq
from tolerance import LOGPROB, reorder_tol

PROMPTS = [[1, 40, 41, 42, 43, 44], [1, 50, 51], [1, 60, 61, 62, 63]]
ANSWERS = [[70, 71, 72, 2], [80, 2], [90, 91, 92, 93, 94, 2]]
TERMS = 4 * (32 + 64)
"""Additions behind each output of the tiny encoder-decoders (2 encoder and 2 decoder layers, each
output summing 32 attention and 64 feed-forward inputs): what another padding rounds differently."""
TOL = reorder_tol(LOGPROB, TERMS)
"""The same log-probs from batches padded another way (about 3e-4)."""


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("seq2seq")
    return {name: build_seq2seq(root / name, name, init="peaked") for name in SEQ2SEQ}


def load(path: Path):
    return load_lm(ModelConfig(path=str(path), dtype="float32"), for_training=False)


def by_hand(model, prompt: list[int], answer: list[int]) -> torch.Tensor:
    """log π(answer_t | prompt, answer_<t), one example, no padding: the decoder reads the start
    token then the answer's tokens before t, and its position t predicts answer token t."""
    decoder = torch.tensor([[start_token(model), *answer[:-1]]])
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt]), decoder_input_ids=decoder).logits[0]  # (N, V)
    return torch.log_softmax(logits.double(), -1)[torch.arange(len(answer)), torch.tensor(answer)].float()


@pytest.mark.parametrize("name", list(SEQ2SEQ))
def test_an_encoder_decoder_loads_whole_as_a_policy(models, name):
    model = load(models[name])
    expected = {"t5": "T5ForConditionalGeneration", "bart": "BartForConditionalGeneration"}[name]
    assert type(model).__name__ == expected  # never the decoder alone (BartForCausalLM)
    assert any("encoder" in key for key in model.state_dict())


@pytest.mark.parametrize("name", list(SEQ2SEQ))
def test_every_read_out_is_the_teacher_forced_log_prob(models, name):
    from rlhf.data.examples import Row
    from rlhf.models.readout import completion_logprobs
    from rlhf.models.seq2seq import collate_seq2seq
    from rlhf.ppo.policy import PolicyValue
    from rlhf.ppo.rollout import collate
    from rlhf.preference.groups import Group
    from rlhf.preference.sequences import SequenceLogps, collate_sequences
    from rlhf.training.heldout import forward_nll

    model = load(models[name])
    expected = [by_hand(model, p, a) for p, a in zip(PROMPTS, ANSWERS)]
    # The check can fail: the decoder's position t + 1 read for token t (a causal LM's alignment)
    # is far beyond the tolerance.
    decoder = torch.tensor([[start_token(model), *ANSWERS[0]]])
    with torch.no_grad():
        late = torch.log_softmax(
            model(input_ids=torch.tensor([PROMPTS[0]]), decoder_input_ids=decoder).logits[0], -1
        )
    misread = late[torch.arange(1, len(ANSWERS[0]) + 1), torch.tensor(ANSWERS[0])]
    assert (misread - expected[0]).abs().max() > 100 * TOL

    read = completion_logprobs(model, PROMPTS, ANSWERS, batch_size=3, pad_id=0)  # evaluation's KL
    for got, want in zip(read, expected):
        assert got == pytest.approx(want.tolist(), abs=TOL)

    # DPO / RRHF: one group of the three completions (the prompts differ: any layout works).
    groups = [Group("", [p + a], targets=[1.0], prompt_lens=[len(p)]) for p, a in zip(PROMPTS, ANSWERS)]
    batch = collate_sequences(groups, 0, mode="regression", decoder_start=start_token(model))
    with torch.no_grad():
        logps = SequenceLogps(model)(**batch.inputs()).logps
    assert logps.tolist() == pytest.approx([float(w.sum()) for w in expected], abs=TOL * 6)

    # PPO: the rollout layout (prompts left padded, responses right padded), through the value head.
    policy = PolicyValue(model, value_head=True)
    ppo = collate(PROMPTS, ANSWERS, 0, "cpu")
    with torch.no_grad():
        out = policy(ppo["input_ids"], ppo["attention_mask"], ppo["response"])
    for row, want in enumerate(expected):
        assert out.logprobs[row, : len(want)].tolist() == pytest.approx(want.tolist(), abs=TOL)
    assert out.values is not None and out.values.shape == ppo["response"].shape

    # SFT: the summed NLL of the answers, every answer token counted (the first one too).
    rows = [Row(p + a, [-100] + (p + a)[1:], [len(p + a)], [len(p)]) for p, a in zip(PROMPTS, ANSWERS)]
    sft = collate_seq2seq(rows, 0, start_token(model))
    with torch.no_grad():
        nll, count = forward_nll(model, sft)
    assert int(count) == sum(len(a) for a in ANSWERS)
    assert float(nll) == pytest.approx(-sum(float(w.sum()) for w in expected), abs=TOL * 12)


def test_the_value_at_a_response_token_never_sees_the_tokens_after_it(models):
    """V(s_t) is read at decoder position t, which reads the response before t: changing token t
    leaves V(s_0..s_t) alone and moves the values after it."""
    from rlhf.ppo.policy import PolicyValue
    from rlhf.ppo.rollout import collate

    policy = PolicyValue(load(models["t5"]), value_head=True)
    answers = [list(ANSWERS[2]), list(ANSWERS[2])]
    answers[1][3] = 33
    batch = collate([PROMPTS[2]] * 2, answers, 0, "cpu")
    with torch.no_grad():
        values = policy(batch["input_ids"], batch["attention_mask"], batch["response"]).values
    # Two rows of one batch: the same inputs up to t, rounded by another row's kernels at most.
    tol = reorder_tol(1.0, TERMS)
    assert torch.allclose(values[0, :4], values[1, :4], atol=tol)
    assert (values[0, 4:] - values[1, 4:]).abs().min() > 10 * tol


@pytest.mark.parametrize("name", list(SEQ2SEQ))
def test_greedy_generation_writes_what_the_teacher_forced_model_ranks_first(models, name):
    """The built-in engine pads prompts on the right for the encoder and returns what the decoder
    wrote after its start token: every greedy token must be the teacher-forced argmax there."""
    from rlhf.generation.config import SamplingConfig
    from rlhf.generation.sampling import sample_sequences
    from rlhf.models import load_tokenizer

    model = load(models[name])
    tokenizer = load_tokenizer(ModelConfig(path=str(models[name])))
    sampling = SamplingConfig(temperature=0, max_new_tokens=6, batch_size=3)
    samples = sample_sequences(model, tokenizer, PROMPTS, sampling, progress=False)
    for prompt, sample in zip(PROMPTS, samples):
        assert sample.token_ids
        decoder = torch.tensor([[start_token(model), *sample.token_ids[:-1]]])
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt]), decoder_input_ids=decoder).logits[0]
        assert logits.argmax(-1).tolist() == sample.token_ids


@pytest.mark.parametrize("name", list(SEQ2SEQ))
def test_an_encoder_decoder_reward_model_reads_where_its_own_classifier_reads(models, name, tmp_path):
    """transformers' `...ForSequenceClassification` of an encoder-decoder feeds the text to both the
    encoder and (shifted right) the decoder and reads the decoder at the final EOS; the reward model
    reads the same, at the last real token, padded either side; as a PPO critic it reads the prompt
    with the encoder and the response with the decoder."""
    from rlhf.models import load_scalar_model

    model = load_scalar_model(ModelConfig(path=str(models[name]), dtype="float32"), for_training=False)
    assert model.kind == "seq2seq" and "decoder's last token" in model.reads
    rows = [p + a for p, a in zip(PROMPTS, ANSWERS)]  # each ends with EOS (2); pad is 0
    width = max(len(r) for r in rows)
    right = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    left = torch.tensor([[0] * (width - len(r)) + r for r in rows])
    with torch.no_grad():
        own = model.seq_model(input_ids=right, attention_mask=(right != 0).long()).logits[:, 0]
        mine = model(input_ids=right, attention_mask=(right != 0).long())
        lefty = model(input_ids=left, attention_mask=(left != 0).long())
    # The same layers on the same rows, the classifier with its own (full-width) decoder mask.
    assert mine.last.tolist() == pytest.approx(own.tolist(), abs=reorder_tol(1.0, TERMS))
    assert lefty.last.tolist() == pytest.approx(mine.last.tolist(), abs=reorder_tol(1.0, TERMS))
    # values (B, T) come back in the caller's columns: the last real token holds `last`.
    assert lefty.values[:, -1].tolist() == pytest.approx(lefty.last.tolist(), abs=1e-6)


def test_an_encoder_decoder_is_refused_by_vllm_and_auto_falls_back(models):
    from rlhf.engines import EngineError, resolve_engine

    said = []
    cfg = ModelConfig(path=str(models["bart"]))
    assert resolve_engine("auto", cfg, say=said.append) == "hf"
    assert "is an encoder-decoder model, which this engine does not run" in said[0]
    with pytest.raises(EngineError, match="engine: vllm: .* is an encoder-decoder model"):
        resolve_engine("vllm", cfg)


@pytest.mark.parametrize("name", list(SEQ2SEQ))
def test_export_writes_a_conditional_generation_model(models, name, tmp_path):
    """A LoRA adapter on an encoder-decoder merges into a `...ForConditionalGeneration` that plain
    transformers loads and that computes what base + adapter computed."""
    from transformers import AutoModelForSeq2SeqLM

    from rlhf.config import PeftConfig
    from rlhf.models import save_model
    from rlhf.models.export import export_model
    from rlhf.models.load import load_tokenizer

    cfg = ModelConfig(path=str(models[name]), dtype="float32")
    lm = load_lm(cfg, PeftConfig(method="lora", lora_rank=4, lora_dropout=0.0))
    with torch.no_grad():  # a non-zero update, so the merge has something to merge
        for param_name, param in lm.named_parameters():
            if "lora_B" in param_name:
                param.normal_(std=0.5)
    lm.eval()
    save_model(lm, load_tokenizer(cfg), tmp_path / "adapter", merge=False)
    summary = export_model(str(tmp_path / "adapter"), str(tmp_path / "out"))
    assert summary["merged"] and summary["architecture"].endswith("ForConditionalGeneration")
    exported = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "out").eval()
    assert type(exported).__name__ == summary["architecture"]
    decoder = torch.tensor([[start_token(lm), *ANSWERS[0][:-1]]])
    with torch.no_grad():
        merged = exported(input_ids=torch.tensor([PROMPTS[0]]), decoder_input_ids=decoder).logits
        adapted = lm(input_ids=torch.tensor([PROMPTS[0]]), decoder_input_ids=decoder).logits
    # W + BA summed once against W x + B(A x): float32 rounding of the peaked logits (size ~10).
    assert torch.allclose(merged, adapted, atol=reorder_tol(10.0, TERMS))


def test_one_embedding_module_keeps_what_the_model_computes(models):
    """The FSDP2 workaround: the encoder's and decoder's embedding modules become the shared one."""
    from rlhf.training.sharding import one_embedding_module

    for name in SEQ2SEQ:
        model = load(models[name])
        decoder = torch.tensor([[start_token(model), *ANSWERS[0][:-1]]])
        with torch.no_grad():
            before = model(input_ids=torch.tensor([PROMPTS[0]]), decoder_input_ids=decoder).logits
        one_embedding_module(model)
        shared = model.get_input_embeddings()
        assert model.get_encoder().embed_tokens is shared and model.get_decoder().embed_tokens is shared
        with torch.no_grad():
            after = model(input_ids=torch.tensor([PROMPTS[0]]), decoder_input_ids=decoder).logits
        assert torch.equal(before, after)
