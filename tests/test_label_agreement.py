"""Agreement metrics against hand-worked values and the published examples they are usually checked on.

Hand-worked values are exact fractions, checked to 1e-9; published ones are given to three decimals,
checked to 1e-3.
"""

from __future__ import annotations

import pytest

from rlhf.label.agreement import (
    annotator_report,
    cohen_kappa,
    fleiss_kappa,
    krippendorff_alpha,
    majority,
    raw_agreement,
    units_from_judgments,
)

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", reliability data of section C:
# 4 observers (rows) × 12 units (columns), None = missing. Unit 12 has one value: not pairable.
KRIPPENDORFF_2011 = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
]

# Fleiss' kappa example of Wikipedia ("Fleiss' kappa", worked example): 10 subjects, 14 raters each,
# n_ij = raters who put subject i in category j (5 categories). Column sums 20, 28, 39, 21, 32 of 140.
FLEISS_WIKIPEDIA = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]


def _columns(matrix: list[list]) -> dict[int, list]:
    """Observer × unit matrix -> units {unit: [value of each observer]}."""
    return {u: [row[u] for row in matrix] for u in range(len(matrix[0]))}


def _from_counts(table: list[list[int]]) -> dict[int, list[int]]:
    """Subject × category count table -> units {subject: [category, ...]}."""
    return {i: [j for j, n in enumerate(row) for _ in range(n)] for i, row in enumerate(table)}


# raw agreement


def test_raw_agreement_counts_pairs_within_items() -> None:
    # item 1 [a, a, b]: 3 pairs, 1 agreeing; item 2 [a, a]: 1 pair, 1 agreeing;
    # item 3 [b]: one value, ignored; item 4 [a, None, b] -> [a, b]: 1 pair, 0 agreeing.
    # (1 + 1 + 0) / (3 + 1 + 1) = 2/5
    units = {1: ["a", "a", "b"], 2: ["a", "a"], 3: ["b"], 4: ["a", None, "b"]}
    assert raw_agreement(units) == pytest.approx(0.4, abs=1e-9)
    assert raw_agreement({1: ["x", "x", "x"], 2: ["y", "y"]}) == 1.0


def test_raw_agreement_without_pairs_is_none() -> None:
    assert raw_agreement({1: ["a"], 2: [], 3: ["b", None]}) is None
    assert raw_agreement({}) is None


# Cohen's kappa


def test_cohen_kappa_two_by_two_by_hand() -> None:
    # 50 items: 20 both yes, 15 both no, 5 a-yes/b-no, 10 a-no/b-yes.
    # p_o = 35/50 = 0.7; a says yes 25/50 = 0.5, b says yes 30/50 = 0.6;
    # p_e = 0.5·0.6 + 0.5·0.4 = 0.5; κ = (0.7 − 0.5) / (1 − 0.5) = 0.4
    a = ["y"] * 20 + ["n"] * 15 + ["y"] * 5 + ["n"] * 10
    b = ["y"] * 20 + ["n"] * 15 + ["n"] * 5 + ["y"] * 10
    assert cohen_kappa(a, b) == pytest.approx(0.4, abs=1e-9)
    # Symmetric in the two annotators; items where either label is missing are left out.
    assert cohen_kappa(b, a) == pytest.approx(0.4, abs=1e-9)
    assert cohen_kappa([*a, None, "y"], [*b, "y", None]) == pytest.approx(0.4, abs=1e-9)


def test_cohen_kappa_perfect_chance_and_opposite() -> None:
    assert cohen_kappa(["x", "y", "x", "z"], ["x", "y", "x", "z"]) == pytest.approx(1.0, abs=1e-9)
    # a always says y, b half and half: p_o = 0.5, p_e = 1·0.5 + 0·0.5 = 0.5 -> κ = 0
    assert cohen_kappa(["y"] * 4, ["y", "y", "n", "n"]) == pytest.approx(0.0, abs=1e-9)
    # always opposite: p_o = 0, p_e = 0.5·0.5 + 0.5·0.5 = 0.5 -> κ = −0.5 / 0.5 = −1
    assert cohen_kappa(["y", "n"], ["n", "y"]) == pytest.approx(-1.0, abs=1e-9)


def test_cohen_kappa_degenerate_and_invalid() -> None:
    # Both always "y": p_o = p_e = 1, κ = 0/0 -> None.
    assert cohen_kappa(["y", "y", "y"], ["y", "y", "y"]) is None
    assert cohen_kappa([], []) is None
    assert cohen_kappa([None], ["y"]) is None
    with pytest.raises(ValueError, match="aligned"):
        cohen_kappa(["y", "n"], ["y"])


# Fleiss' kappa


def test_fleiss_kappa_wikipedia_example() -> None:
    # Wikipedia: p_j = 0.143, 0.200, 0.279, 0.150, 0.229; P̄ = 0.378, P_e = 0.213, κ = 0.210
    assert fleiss_kappa(_from_counts(FLEISS_WIKIPEDIA)) == pytest.approx(0.210, abs=1e-3)


def test_fleiss_kappa_small_by_hand() -> None:
    # [a, a, a]: P = 3·2/(3·2) = 1; [a, a, b]: P = 2·1/6 = 1/3; [b, b, b]: P = 1.
    # P̄ = (1 + 1/3 + 1)/3 = 7/9; p_a = 5/9, p_b = 4/9, P_e = (25 + 16)/81 = 41/81
    # κ = (63/81 − 41/81) / (40/81) = 22/40 = 0.55
    units = {1: ["a", "a", "a"], 2: ["a", "a", "b"], 3: ["b", "b", "b"]}
    assert fleiss_kappa(units) == pytest.approx(0.55, abs=1e-9)
    # A single rating carries no agreement and changes nothing (not even p_j).
    assert fleiss_kappa({**units, 4: ["a"], 5: ["b", None]}) == pytest.approx(0.55, abs=1e-9)


def test_fleiss_kappa_unequal_rating_counts_by_hand() -> None:
    # Add [b, a] (n_i = 2): P = 0. P̄ = (1 + 1/3 + 1 + 0)/4 = 7/12;
    # p_a = 6/11, p_b = 5/11, P_e = (36 + 25)/121 = 61/121
    # κ = (7/12 − 61/121) / (60/121) = (115 / (12·121)) · (121/60) = 115/720
    units = {1: ["a", "a", "a"], 2: ["a", "a", "b"], 3: ["b", "b", "b"], 4: ["b", "a"]}
    assert fleiss_kappa(units) == pytest.approx(115 / 720, abs=1e-9)


def test_fleiss_kappa_degenerate_is_none() -> None:
    assert fleiss_kappa({1: ["a", "a"], 2: ["a", "a", "a"]}) is None  # P_e = 1
    assert fleiss_kappa({1: ["a"], 2: []}) is None


# Krippendorff's alpha


@pytest.mark.parametrize(
    ("level", "published"),
    [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849), ("ratio", 0.797)],
)
def test_krippendorff_alpha_paper_example(level: str, published: float) -> None:
    assert krippendorff_alpha(_columns(KRIPPENDORFF_2011), level) == pytest.approx(published, abs=1e-3)


def test_krippendorff_alpha_nominal_by_hand() -> None:
    # [a, a]: o_aa += 2·1/(2−1) = 2; [a, b]: o_ab = o_ba = 1; [b, b]: o_bb = 2.
    # n_a = n_b = 3, n = 6; Σ o_ck δ = o_ab + o_ba = 2; Σ n_c n_k δ = 2·3·3 = 18
    # α = 1 − (n − 1)·2/18 = 1 − 10/18 = 4/9
    units = {1: ["a", "a"], 2: ["a", "b"], 3: ["b", "b"]}
    assert krippendorff_alpha(units) == pytest.approx(4 / 9, abs=1e-9)
    # With only two distinct values every δ is the same constant, so every level gives 4/9 too.
    numbers = {1: [1, 1], 2: [1, 3], 3: [3, 3]}
    for level in ("nominal", "ordinal", "interval", "ratio"):
        assert krippendorff_alpha(numbers, level) == pytest.approx(4 / 9, abs=1e-9)


def test_krippendorff_alpha_weights_a_unit_by_its_pairs() -> None:
    # [a, a, b] (m = 3, weight 1/2): o_aa = 2·1/2 = 1, o_ab = o_ba = 2·1/2 = 1; [b, b]: o_bb = 2.
    # n_a = 2, n_b = 3, n = 5; Σ o δ = 2; Σ n_c n_k δ = 2·2·3 = 12; α = 1 − 4·2/12 = 1/3
    assert krippendorff_alpha({1: ["a", "a", "b"], 2: ["b", "b"]}) == pytest.approx(1 / 3, abs=1e-9)


def test_krippendorff_alpha_levels_by_hand() -> None:
    # [1, 2]: o_12 = o_21 = 1; [2, 3]: o_23 = o_32 = 1; [3, 3]: o_33 = 2.
    # n_1 = 1, n_2 = 2, n_3 = 3, n = 6; (n − 1) = 5.
    units = {1: [1, 2], 2: [2, 3], 3: [3, 3]}
    # interval δ = (c − k)²: Σ o δ = 2·1 + 2·1 = 4; Σ n n δ = 2·(1·2·1 + 1·3·4 + 2·3·1) = 40
    # α = 1 − 5·4/40 = 0.5
    assert krippendorff_alpha(units, "interval") == pytest.approx(0.5, abs=1e-9)
    # ordinal δ_ck = (Σ_{g=c..k} n_g − (n_c + n_k)/2)²: δ_12 = (3 − 1.5)² = 2.25,
    # δ_23 = (5 − 2.5)² = 6.25, δ_13 = (6 − 2)² = 16.
    # Σ o δ = 2·2.25 + 2·6.25 = 17; Σ n n δ = 2·(2·2.25 + 3·16 + 6·6.25) = 180; α = 1 − 85/180 = 95/180
    assert krippendorff_alpha(units, "ordinal") == pytest.approx(95 / 180, abs=1e-9)
    # Ordinal uses only the order, so the same data as letters gives the same α.
    letters = {u: ["abc"[v - 1] for v in values] for u, values in units.items()}
    assert krippendorff_alpha(letters, "ordinal") == pytest.approx(95 / 180, abs=1e-9)
    # ratio δ = ((c − k)/(c + k))²: δ_12 = 1/9, δ_23 = 1/25, δ_13 = 1/4.
    # Σ o δ = 2/9 + 2/25 = 68/225; Σ n n δ = 2·(2/9 + 3/4 + 6/25) = 1091/450
    # α = 1 − 5·(68/225)·(450/1091) = 1 − 680/1091 = 411/1091
    assert krippendorff_alpha(units, "ratio") == pytest.approx(411 / 1091, abs=1e-9)


def test_krippendorff_alpha_perfect_agreement_and_undefined() -> None:
    perfect = {1: [1, 1, None], 2: [2, 2, 2], 3: [0, 0], 4: [5]}
    for level in ("nominal", "ordinal", "interval", "ratio"):
        assert krippendorff_alpha(perfect, level) == pytest.approx(1.0, abs=1e-9)
    assert krippendorff_alpha({1: [1], 2: [2, None], 3: []}) is None  # nothing pairable
    assert krippendorff_alpha({}) is None
    assert krippendorff_alpha({1: ["a", "a"], 2: ["a", "a", "a"]}) is None  # no variation: D_e = 0


def test_krippendorff_alpha_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="numeric"):
        krippendorff_alpha({1: ["a", "b"]}, "interval")
    with pytest.raises(ValueError, match="non-negative"):
        krippendorff_alpha({1: [-1, 2]}, "ratio")
    with pytest.raises(ValueError, match="unknown level"):
        krippendorff_alpha({1: [1, 2]}, "cardinal")  # type: ignore[arg-type]


# majority and per-annotator report


def test_majority_and_ties() -> None:
    assert majority(["a", "b", "a"]) == ("a", 2)
    assert majority(["a", "b"]) == (None, 1)
    assert majority(["a", "a", "b", "b", "c"]) == (None, 2)
    assert majority([None, "a", None]) == ("a", 1)
    assert majority([]) == (None, 0)
    # A plurality is enough: 2 of 5 is not half, but nothing else has 2.
    assert majority(["a", "a", "b", "c", "d"]) == ("a", 2)


JUDGMENTS = [
    ("ann1", 1, "yes"),
    ("ann2", 1, "yes"),
    ("ann3", 1, "no"),
    ("ann1", 2, "no"),
    ("ann2", 2, "yes"),
    ("ann3", 2, "yes"),
    ("ann1", 3, "yes"),
    ("ann2", 3, "no"),
    ("ann1", 4, "yes"),
    ("ann3", 5, "yes"),
    ("ann2", 5, "no"),
    ("ann3", 5, "no"),  # ann3 re-labels item 5: "no" replaces "yes"
    ("ann4", 6, "yes"),
    ("ann4", 7, None),  # missing: ignored
]


def test_units_from_judgments_keeps_one_value_per_annotator() -> None:
    assert units_from_judgments(JUDGMENTS[:-1]) == {
        1: ["yes", "yes", "no"],
        2: ["no", "yes", "yes"],
        3: ["yes", "no"],
        4: ["yes"],
        5: ["no", "no"],  # ann3's last value, ann2's
        6: ["yes"],
    }
    # Pairs: item 1 1/3, item 2 1/3, item 3 0/1, item 5 1/1 -> 3/8
    assert raw_agreement(units_from_judgments(JUDGMENTS)) == pytest.approx(3 / 8, abs=1e-9)


def test_annotator_report_by_hand() -> None:
    report = annotator_report(JUDGMENTS)
    assert list(report) == ["ann1", "ann2", "ann3", "ann4"]
    # ann1: items 1-4; others on 1 [yes, no] tie (skipped), on 2 [yes, yes] -> yes (ann1 no),
    # on 3 [no] -> no (ann1 yes); item 4 alone. 0 of 2.
    assert report["ann1"] == {"count": 4, "agreement_with_majority": 0.0, "items_with_others": 3}
    # ann2: items 1, 2, 3, 5; others on 1 [yes, no] tie, on 2 [no, yes] tie, on 3 [yes] (ann2 no),
    # on 5 [no] (ann2 no). 1 of 2.
    assert report["ann2"] == {"count": 4, "agreement_with_majority": 0.5, "items_with_others": 4}
    # ann3: items 1, 2, 5; others on 1 [yes, yes] (ann3 no), on 2 [no, yes] tie, on 5 [no] (ann3's
    # last value no). 1 of 2.
    assert report["ann3"] == {"count": 3, "agreement_with_majority": 0.5, "items_with_others": 3}
    # ann4: item 6 alone, item 7 missing: nothing to compare with.
    assert report["ann4"] == {"count": 1, "agreement_with_majority": None, "items_with_others": 0}
