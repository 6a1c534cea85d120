"""The pairwise LLM judge against an OpenAI-compatible server answering by a written rule
(tests/judge_server.py): replies read or abstained on, both orders against position bias, the
verdict's probability from the token log-probabilities by hand, retries, the disk cache."""

from __future__ import annotations

import pytest

from judge_server import judge_server, rule_p_a
from rlhf.config.core import ConfigError
from rlhf.judge import JudgeConfig, PairwiseJudge, verdict_counts
from rlhf.judge.client import JudgeError
from rlhf.judge.verdict import parse_verdict, probability_a

PROMPTS = ["Say something.", "Describe tea.", "Any word.", "Pick one."]
A = ["eee", "tea", "same", "e"]
B = ["e", "green tree", "same", "x"]


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [("A", "A"), ("b", "B"), (" [[A]]", "A"), ("**B**.", "B"), ("Answer: tie", "tie"), ("Verdict - A", "A"),
     ("Tie.", "tie"), ("Answer B is better.", "B"), ("A, because it is shorter", "A"), ("", None),
     ("Both are fine", None), ("Answer A is good and answer B is better", None), ("Absolutely", None)],
)  # fmt: skip
def test_a_reply_is_read_only_when_it_says_one_thing(reply, verdict):
    assert parse_verdict(reply) == verdict


def test_the_probability_of_a_from_the_verdict_tokens():
    import math

    top = [{"token": " A", "logprob": math.log(0.6)}, {"token": "B", "logprob": math.log(0.2)},
           {"token": "tie", "logprob": math.log(0.2)}]  # fmt: skip
    assert probability_a(top) == pytest.approx(0.75)  # 0.6 / (0.6 + 0.2): renormalized over A and B
    assert probability_a(None) is None and probability_a([{"token": "x", "logprob": 0.0}]) is None


def judge(server, model: str, tmp_path, **more) -> PairwiseJudge:
    settings = {"cache": str(tmp_path / "cache.sqlite"), "backoff_s": 0.0, **more}
    return PairwiseJudge(JudgeConfig(url=server.url, model_name=model, **settings))


def test_both_orders_give_the_rules_verdicts_and_probabilities(tmp_path):
    with judge_server() as server:
        verdicts = judge(server, "rule", tmp_path).compare(PROMPTS, A, B)
        # Two orders per pair, but the pair of equal answers reads the same either way: asked once.
        assert len(server.requests) == 7
    assert [v.winner for v in verdicts] == ["a", "b", "tie", "a"]  # e counts 3:1, 1:3, equal, 1:0
    assert not any(v.inconsistent for v in verdicts)
    for v, a, b in zip(verdicts, A, B):
        # A shown first: P(A) = sigmoid(Δe); swapped: 1 - P(A shown second) = sigmoid(Δe) again.
        assert v.p_a == pytest.approx(rule_p_a(a, b), abs=1e-12)
    assert verdict_counts(verdicts) == {
        "pairs": 4,
        "a": 2,
        "b": 1,
        "tie": 1,
        "inconsistent": 0,
        "abstained": 0,
    }


def test_a_judge_that_always_picks_a_position_gives_only_ties(tmp_path):
    with judge_server() as server:
        verdicts = judge(server, "first", tmp_path).compare(PROMPTS, A, B)
        one_order = judge(server, "first", tmp_path, both_orders=False, cache=None).compare(PROMPTS, A, B)
    assert all(v.winner == "tie" and v.inconsistent for v in verdicts)
    assert [v.p_a for v in verdicts] == pytest.approx([0.5] * 4)  # 0.9 for A first, 0.1 when swapped
    assert [v.winner for v in one_order] == ["a"] * 4  # asked once, the bias passes for a verdict


def test_an_unreadable_reply_is_an_abstention_not_a_guess(tmp_path):
    with judge_server() as server:
        verdicts = judge(server, "garbage", tmp_path).compare(PROMPTS, A, B)
    assert all(v.winner is None and v.p_a is None for v in verdicts)
    assert verdicts[0].replies == ["I cannot decide between these."] * 2
    assert verdict_counts(verdicts)["abstained"] == 4


def test_failures_are_retried_and_answers_cached(tmp_path):
    with judge_server() as server:
        first = judge(server, "flaky", tmp_path).compare(PROMPTS[:1], A[:1], B[:1])
        assert first[0].winner == "a"
        sent = len(server.requests)  # 2 refused with 503, then the two orders
        assert sent == 4
        again = judge(server, "flaky", tmp_path)
        assert again.compare(PROMPTS[:1], A[:1], B[:1])[0] == first[0]
        assert len(server.requests) == sent and again.client.sent == 0  # answered from the cache
        with pytest.raises(JudgeError, match=r"^judge rule at .*: HTTP 404"):
            PairwiseJudge(JudgeConfig(url=server.url + "/nowhere", model_name="rule", cache=None)).compare(
                PROMPTS[:1], A[:1], B[:1]
            )


def test_templates_and_settings_are_checked(tmp_path):
    bad = tmp_path / "rubric.txt"
    bad.write_text("Which is better? {answer_a} or {answer_b}")
    with pytest.raises(ConfigError, match=r"rubric.txt lacks \{prompt\}"):
        PairwiseJudge(JudgeConfig(url="http://127.0.0.1:9/v1", model_name="m", template=str(bad), cache=None))
    with pytest.raises(ConfigError, match="needs `judge.model_name`"):
        JudgeConfig(url="http://127.0.0.1:9/v1")
    from rlhf.judge.templates import PAIRWISE, render

    text = render(PAIRWISE, "Use {answer_b} here", "{prompt}", "b")
    assert (
        "Use {answer_b} here" in text and "[Answer A]\n{prompt}\n" in text
    )  # fields in values stay as written
