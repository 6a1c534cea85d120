"""Active choice of pairs to label (`rlhf.active`): the pool, each rule on hand-worked scores, the
budget and per-prompt cap, and the rules fed by real reward sources."""

from __future__ import annotations

import math

import pytest

from rlhf.active import choose_pairs, pair_candidates, score_candidates

TEXTS = [["a cat", "a dog", "a ship"], ["red", "blue"]]


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def test_the_pool_is_every_pair_of_distinct_non_empty_candidates():
    texts = [["x", "", "y", "x\u200b"], ["only"]]  # blank; `x` with a zero-width space reads as `x`
    assert pair_candidates(texts) == [(0, 0, 2), (0, 2, 3)]
    assert pair_candidates(TEXTS) == [(0, 0, 1), (0, 0, 2), (0, 1, 2), (1, 0, 1)]


def test_uncertainty_takes_the_pairs_predicted_closest_to_even():
    # P(a > b) = sigmoid(r_a - r_b): (0,0,1) 0.475, (0,0,2) 0.0067, (0,1,2) 0.0074, (1,0,1) 0.119.
    scores = [[[0.0, 0.1, 5.0], [1.0, 3.0]]]
    chosen = choose_pairs(TEXTS, scores, rule="uncertainty", budget=3)
    assert [(c.prompt, c.a, c.b) for c in chosen] == [(0, 0, 1), (1, 0, 1), (0, 1, 2)]
    # The same sigmoid on the same float64 difference: equal to the last bit.
    assert chosen[0].preference == sigmoid(0.0 - 0.1) and chosen[0].spread is None


def test_disagreement_takes_the_pairs_the_ensemble_splits_on():
    # Model 1 ranks ship > dog > cat, model 2 dog > ship > cat: they agree on cat last and split on dog vs ship.
    scores = [[[0.0, 0.1, 5.0], [1.0, 3.0]], [[0.0, 5.0, 0.1], [1.0, 3.0]]]
    chosen = choose_pairs(TEXTS, scores, rule="disagreement", budget=4)
    order = [(c.prompt, c.a, c.b) for c in chosen]
    # (0,1,2) splits most; (0,0,1) and (0,0,2) split alike (a tie, in seeded order); (1,0,1) not at all.
    assert order[0] == (0, 1, 2) and set(order[1:3]) == {(0, 0, 1), (0, 0, 2)} and order[3] == (1, 0, 1)
    assert chosen[3].spread == 0.0
    p1, p2 = sigmoid(0.1 - 5.0), sigmoid(5.0 - 0.1)
    assert chosen[0].preference == pytest.approx((p1 + p2) / 2, abs=1e-15)  # a mean of two floats
    assert chosen[0].spread == pytest.approx(abs(p1 - p2) / 2, abs=1e-15)  # population std of two


def test_random_is_seeded_and_the_budget_and_cap_hold():
    many = [[f"answer {i}-{j}" for j in range(4)] for i in range(10)]  # 6 pairs a prompt
    first = choose_pairs(many, None, rule="random", budget=12, seed=3)
    assert first == choose_pairs(many, None, rule="random", budget=12, seed=3)
    assert first != choose_pairs(many, None, rule="random", budget=12, seed=4)
    capped = choose_pairs(many, None, rule="random", budget=12, seed=3, per_prompt=1)
    assert len(capped) == 10 and len({c.prompt for c in capped}) == 10  # one a prompt: 10 is all there is
    assert len(choose_pairs(many, None, rule="random", budget=1000)) == 60
    with pytest.raises(ValueError, match="needs a reward model"):
        choose_pairs(many, None, rule="uncertainty", budget=3)
    with pytest.raises(ValueError, match="needs two or more reward models"):
        choose_pairs(many, [[[0.0] * 4] * 10], rule="disagreement", budget=3)


def test_a_hand_built_reward_function_steers_uncertainty(tmp_path):
    """A reward source scored from a table set by hand: the pairs it is least sure of come first."""
    from rlhf.rewards.sources import FunctionSource

    (tmp_path / "table.py").write_text(
        "TABLE = {'a cat': 0.0, 'a dog': 2.0, 'a ship': 2.2, 'red': -1.0, 'blue': 1.5}\n"
        "def rm(prompts, completions):\n    return [TABLE[c] for c in completions]\n"
    )
    scores = score_candidates([FunctionSource(f"{tmp_path / 'table.py'}:rm")], ["p", "q"], TEXTS)
    assert scores == [[[0.0, 2.0, 2.2], [-1.0, 1.5]]]
    chosen = choose_pairs(TEXTS, scores, rule="uncertainty", budget=2)
    assert [(c.prompt, c.a, c.b) for c in chosen] == [(0, 1, 2), (0, 0, 1)]  # |Δ| 0.2, then 2.0


def test_a_real_reward_model_scores_every_candidate_as_the_scorer_does(tmp_path):
    import torch

    from rlhf.config.parts import ModelConfig
    from rlhf.models import load_tokenizer
    from rlhf.models.scalar import load_scalar_model, save_scalar_model
    from rlhf.rewards.scorer import RewardScorer
    from rlhf.rewards.sources import RewardModelSource

    cfg = ModelConfig(path="builtin:tiny")
    tokenizer = load_tokenizer(cfg)
    torch.manual_seed(0)
    save_scalar_model(
        load_scalar_model(cfg, tokenizer=tokenizer, for_training=False), tmp_path / "rm", tokenizer
    )
    scores = score_candidates([RewardModelSource(str(tmp_path / "rm"), device="cpu")], ["p", "q"], TEXTS)
    direct = RewardScorer.load(tmp_path / "rm", device="cpu").score(["p", "p", "p", "q", "q"], sum(TEXTS, []))
    # One batch of five against the same five in the same batch: the same forward, equal floats.
    assert sum(scores[0], []) == direct
    chosen = choose_pairs(TEXTS, scores, rule="uncertainty", budget=4)
    gaps = [abs(c.preference - 0.5) for c in chosen]
    assert gaps == sorted(gaps)
