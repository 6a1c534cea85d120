"""The LLM judge where it is used, against an OpenAI-compatible server of the tests answering by a
written rule (more `e`s is better): in `eval policy` its win rate equals a hand count of the rule
over the answers, and a judge that only prefers a position gives inconsistent ties; `judge: gold`,
the key's old meaning, is one line naming `headline`; as the pipeline's labeler its pairs follow
the rule and a rerun is answered from its cache; as a reward it ranks each prompt's samples
(hand-worked) and PPO trains against it with RLOO."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from judge_server import judge_server
from rlhf.config import load_config
from rlhf.config.core import ConfigError
from rlhf.eval.config import EvalPolicyConfig

WORDS = ["cats", "rain", "bread", "ships", "tea", "snow"]


def test_the_old_judge_key_names_headline():
    with pytest.raises(
        ConfigError, match=r"^`judge: gold` is now `headline: gold`; `judge` is an LLM judge$"
    ):
        load_config(EvalPolicyConfig, None, ["judge=gold"])
    with pytest.raises(ConfigError, match="`headline: judge` needs `judge`"):
        load_config(EvalPolicyConfig, None, ["headline=judge"])


def evaluate(tmp_path, server, model: str) -> tuple[dict, list[dict]]:
    from rlhf.eval.policy import run_eval_policy
    from rlhf.models import save_tiny

    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Tell me about {w}."}) + "\n" for w in WORDS))
    policy, baseline = save_tiny(tmp_path / "p", seed=1), save_tiny(tmp_path / "b", seed=2)
    out = tmp_path / model
    cfg = load_config(EvalPolicyConfig, None, [
        f"model.path={policy}", f"baseline={baseline}", f"data.path={data}", "prompt.template=raw",
        "sampling.max_new_tokens=16", f"output_dir={out}", "progress=false",
        f"judge={{url: {server.url}, model_name: {model}, cache: {tmp_path / 'cache.sqlite'}}}",
    ])  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        result = run_eval_policy(cfg)
    return result, [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_the_judges_win_rate_is_the_rule_counted_by_hand(tmp_path):
    with judge_server() as server:
        result, rows = evaluate(tmp_path, server, "rule")
        biased, _ = evaluate(tmp_path, server, "first")
    wins = sum(r["policy"].count("e") > r["baseline"].count("e") for r in rows)
    ties = sum(r["policy"].count("e") == r["baseline"].count("e") for r in rows)
    w = result["win_rate"]["judge"]
    assert (w["wins"], w["ties"], w["losses"], w["n"]) == (wins, ties, 6 - wins - ties, 6)
    assert w["rate"] == pytest.approx((wins + ties / 2) / 6) and w["inconsistent"] == w["abstained"] == 0
    assert result["headline"] == "judge"  # no gold: the judge decides
    for row in rows:
        mine, theirs = row["policy"].count("e"), row["baseline"].count("e")
        assert row["judge"]["winner"] == (
            "tie" if mine == theirs else "policy" if mine > theirs else "baseline"
        )
    # Always "A": each order names the other answer, so every pair is an inconsistent tie.
    b = biased["win_rate"]["judge"]
    assert (b["ties"], b["inconsistent"], b["rate"]) == (6, 6, 0.5)


@pytest.mark.slow
def test_the_judge_labels_the_pipelines_pairs_and_a_rerun_asks_nothing(tmp_path):
    from helpers import pipeline_config
    from rlhf.pipeline.run import run_pipeline

    with judge_server() as server:
        judge = f"feedback.judge={{url: {server.url}, model_name: rule, cache: {tmp_path / 'cache.sqlite'}}}"
        cfg = pipeline_config(
            tmp_path, "feedback.source=judge", judge, "stages=[sft, generate, feedback, reward]"
        )
        run_pipeline(cfg, log=lambda _: None)
        run = tmp_path / "run"
        stats = json.loads((run / "feedback" / "feedback.json").read_text())
        assert stats["source"] == "judge" and stats["requests_sent"] == len(server.requests) > 0
        v = stats["verdicts"]
        assert v["a"] + v["b"] + v["tie"] + v["abstained"] == v["pairs"] == stats["pairs"]
        rows = [json.loads(line) for line in (run / "feedback" / "pairs.jsonl").read_text().splitlines()]
        held = [json.loads(line) for line in (run / "feedback" / "heldout.jsonl").read_text().splitlines()]
        # The rule's judge prefers the answer with more `e`s; equal counts are its ties, left out.
        assert len(rows) + len(held) == v["a"] + v["b"] and rows
        assert all(r["chosen"].count("e") > r["rejected"].count("e") for r in rows + held)
        assert json.loads((run / "reward_eval" / "eval.json").read_text())["pairs"] > 0
        # The same pairs asked again: answered from the judge's cache, nothing sent.
        sent = len(server.requests)
        run_pipeline(pipeline_config(tmp_path, "feedback.source=judge", judge, "stages=[sft, generate, feedback, reward]",
                                     "rerun=[feedback]"), log=lambda _: None)  # fmt: skip
        assert len(server.requests) == sent
        assert json.loads((run / "feedback" / "feedback.json").read_text())["requests_sent"] == 0


def test_the_judge_as_a_reward_ranks_each_prompts_samples(tmp_path):
    import math

    from rlhf.judge import JudgeConfig
    from rlhf.rewards.judge import JudgeSource
    from rlhf.rewards.sources import RewardSourceError

    prompts = ["p", "p", "p", "q", "q"]
    completions = ["eee", "e", "ee", "tree", "tea"]
    with judge_server() as server:
        source = JudgeSource(JudgeConfig(url=server.url, model_name="rule", cache=None))
        out = source(prompts, completions)
        with pytest.raises(RewardSourceError, match="2 or more samples"):
            source(["p", "q", "q"], ["e", "e", "ee"])

    def sigmoid(x: float) -> float:
        return 1 / (1 + math.exp(-x))

    # Each sample's mean P(beats the other) = sigmoid(Δe) (the rule's verdict probability), over
    # its own prompt's samples only: e counts 3, 1, 2 and 2, 1.
    want = [(sigmoid(2) + sigmoid(1)) / 2, (sigmoid(-2) + sigmoid(-1)) / 2, (sigmoid(-1) + sigmoid(1)) / 2,
            sigmoid(1), sigmoid(-1)]  # fmt: skip
    assert out.rewards == pytest.approx(want, abs=1e-12)
    assert out.extras == {"judge_abstained": [0.0] * 5}


def test_the_judge_ranks_each_prompts_samples_at_once_in_rank_mode(tmp_path):
    from rlhf.judge import JudgeConfig
    from rlhf.rewards.judge import JudgeSource

    prompts = ["p", "p", "p", "q", "q"]
    completions = ["eee", "e", "ee", "tree", "tea"]
    with judge_server() as server:
        cfg = JudgeConfig(url=server.url, model_name="rule", cache=None)
        out = JudgeSource(cfg, mode="rank")(prompts, completions)
        assert len(server.requests) == 4  # one ranking per prompt, as given and reversed
        biased = JudgeSource(JudgeConfig(url=server.url, model_name="first", cache=None), mode="rank")
        unread = biased(prompts, completions)  # "A" is no ranking: every group abstained
    # Places by `e`s: eee, ee, e -> rewards 1, 1/2, 0; tree before tea -> 1, 0.
    assert out.rewards == [1.0, 0.0, 0.5, 1.0, 0.0]
    assert out.extras == {"judge_abstained": [0.0] * 5}
    assert unread.rewards == [0.5] * 5 and unread.extras == {"judge_abstained": [1.0] * 5}


@pytest.mark.slow
def test_ppo_trains_against_the_judge_with_rloo(tmp_path):
    from helpers import DEMOS
    from rlhf.ppo.config import PpoConfig
    from rlhf.ppo.train import run_ppo

    with judge_server() as server:
        cfg = load_config(PpoConfig, None, [
            "model.path=builtin:tiny", f"data.path={DEMOS}", "max_steps=2", "rollout.prompts_per_step=2",
            "rollout.samples_per_prompt=3", "minibatch_size=6", "rollout.sampling.max_new_tokens=8",
            "advantage.estimator=rloo", f"reward.judge={{url: {server.url}, model_name: rule, cache: null}}",
            f"output_dir={tmp_path / 'ppo'}", "logging.progress=false", "logging.tensorboard=false",
        ])  # fmt: skip
        with contextlib.redirect_stdout(io.StringIO()):
            summary = run_ppo(cfg).summary
        # 2 steps x 2 prompts x 3 pairs of samples x 2 orders, fewer where two samples read alike.
        assert 0 < len(server.requests) <= 24
    rewards = summary["raw_reward"]
    assert len(rewards) == 2 and all(0.0 <= r <= 1.0 for r in rewards)
    # A prompt's samples share its wins: their rewards average to 1/2 (exactly in float64; the
    # logged mean passes through float32, whose rounding on values <= 1 is about 1e-7).
    assert rewards == pytest.approx([0.5, 0.5], abs=1e-6)


@pytest.mark.slow
def test_rounds_with_the_judge_label_each_rounds_new_pairs(tmp_path):
    from helpers import pipeline_config
    from rlhf.pipeline.run import run_pipeline

    with judge_server() as server:
        judge = f"feedback.judge={{url: {server.url}, model_name: rule, cache: null}}"
        rounds = ["rounds=2", "feedback.select=uncertainty", "feedback.budget=4", "feedback.per_prompt=2"]
        run_pipeline(pipeline_config(tmp_path, "feedback.source=judge", judge, *rounds), log=lambda _: None)
    run = tmp_path / "run"
    fb0, fb1 = (json.loads((run / f"round_{r}" / "feedback" / "feedback.json").read_text()) for r in (0, 1))
    assert fb0["source"] == fb1["source"] == "judge"
    assert fb0["selection"]["rule"] == "random" and fb1["selection"]["rule"] == "uncertainty"

    def rows(path):
        return [json.loads(line) for line in path.read_text().splitlines()]

    new = rows(run / "round_1" / "feedback" / "new_pairs.jsonl")
    assert (
        rows(run / "round_1" / "feedback" / "pairs.jsonl")
        == rows(run / "round_0" / "feedback" / "pairs.jsonl") + new
    )
    assert all(r["chosen"].count("e") > r["rejected"].count("e") for r in new)  # the rule's verdicts
    table = json.loads((run / "rounds.json").read_text())["rounds"]
    assert [r["labels"] for r in table] == [fb0["judgments"], fb1["judgments"]] and fb1["judgments"] > 0
