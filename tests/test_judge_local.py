"""A judge served by a local model (`judge.model`) through the rollout engine: its reply is the
model's own greedy answer and its verdict probabilities a plain forward pass's; a model fine-tuned to
always answer `A` (a pure position preference, learned for real by SFT here) gives verdicts for `a`
when asked one order, and only inconsistent ties when asked both."""

from __future__ import annotations

import json

import pytest
import torch

from rlhf.judge.config import JudgeConfig
from rlhf.judge.local import LocalClient
from rlhf.judge.pairwise import PairwiseJudge
from rlhf.judge.templates import PAIRWISE, render

PAIRS = [(f"Question {i}: name a {w}.", f"a {w} like {x}", f"maybe {y}") for i, (w, x, y) in enumerate(
    [("fruit", "pear", "rock"), ("colour", "red", "seven"), ("city", "Oslo", "blue"), ("pet", "cat", "tree"),
     ("tool", "saw", "cloud"), ("drink", "tea", "sand"), ("game", "chess", "shoe"), ("bird", "owl", "lamp")]
)]  # fmt: skip


@pytest.fixture(scope="module")
def biased_judge(tmp_path_factory) -> str:
    """The built-in tiny model fine-tuned to answer every judge question with `A`."""
    from rlhf.config import load_config
    from rlhf.sft.config import SftConfig
    from rlhf.sft.train import run_sft

    root = tmp_path_factory.mktemp("biased")
    data = root / "sft.jsonl"
    rows = [{"prompt": [{"role": "user", "content": render(PAIRWISE, q, a, b)}], "completion": "A"}
            for q, x, y in PAIRS for a, b in ((x, y), (y, x))]  # fmt: skip
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run_sft(load_config(SftConfig, None, [
        "model.path=builtin:tiny", f"data.path={data}", "data.max_length=512", "max_steps=30", "batch_size=8",
        "optimizer.lr=3e-3", "eval.fraction=0", f"output_dir={root / 'run'}", "logging.progress=false",
        "logging.tensorboard=false", "save_every=0",
    ]))  # fmt: skip
    return str(root / "run" / "model")


@pytest.mark.slow
def test_a_local_judge_answers_as_the_model_and_its_position_bias_is_caught(biased_judge, tmp_path):
    cfg = JudgeConfig(model=biased_judge, engine="hf", cache=str(tmp_path / "cache.sqlite"), max_tokens=4)
    client = LocalClient(cfg)
    question = render(PAIRWISE, "Name a fish.", "a trout", "a spoon")
    (reply,) = client.ask_many([question])
    ids = torch.tensor([client.encode(question)])
    with torch.no_grad():
        logits = client.model(input_ids=ids).logits[0, -1].float()
        greedy = client.model.generate(
            ids, max_new_tokens=4, do_sample=False, pad_token_id=client.tokenizer.pad_token_id
        )
    assert reply.text == client.tokenizer.decode(greedy[0, ids.shape[1] :], skip_special_tokens=True)
    values, tokens = torch.log_softmax(logits, -1).topk(5)
    assert [t["token"] for t in reply.top_logprobs] == [client.tokenizer.decode([int(t)]) for t in tokens]
    # float32 log-softmax of the same logits, computed twice the same way: equal up to rounding.
    assert [t["logprob"] for t in reply.top_logprobs] == pytest.approx(values.tolist(), abs=1e-6)
    assert reply.text.strip().startswith("A")  # fine-tuning took
    assert client.ask_many([question])[0].cached and client.sent == 1  # answered again from the cache
    client.close()

    prompts, a, b = zip(*[("Name a fish.", "a trout", "a spoon"), ("Name a tree.", "an oak", "a fork")])
    both = PairwiseJudge(JudgeConfig(model=biased_judge, engine="hf", cache=None)).compare(prompts, a, b)
    assert all(v.winner == "tie" and v.inconsistent for v in both)
    one = PairwiseJudge(JudgeConfig(model=biased_judge, engine="hf", cache=None, both_orders=False)).compare(
        prompts, a, b
    )
    assert [v.winner for v in one] == ["a", "a"] and all(v.p_a is not None and v.p_a > 0.5 for v in one)
