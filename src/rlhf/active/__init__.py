"""Active choice of what people label: which prompts and which pairs of candidates to show under a
label budget (`rlhf.active.select`)."""

from rlhf.active.select import RULES, ChosenPair, choose_pairs, pair_candidates, score_candidates

__all__ = ["RULES", "ChosenPair", "choose_pairs", "pair_candidates", "score_candidates"]
