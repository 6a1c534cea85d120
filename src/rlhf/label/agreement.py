"""Inter-annotator agreement: how far several annotators who judged the same items agree.

Most functions take `units`: a mapping from an item id to the values its annotators gave it, one value
per annotator, in any order (`{"q1": ["yes", "yes", "no"], ...}`). `None` entries are missing values
and are dropped, so a full annotator × item matrix with gaps can be passed column by column.
`units_from_judgments` builds units from (annotator, item, value) triples. An item with fewer than
two values carries no information about agreement and is left out everywhere ("not pairable").

- `raw_agreement`: share of agreeing annotator pairs, counted within items.
- `cohen_kappa`: two annotators, κ = (p_o − p_e) / (1 − p_e), chance from each one's own marginals.
- `fleiss_kappa`: many annotators, chance from the pooled category shares.
- `krippendorff_alpha`: many annotators, missing values, nominal / ordinal / interval / ratio data;
  α = 1 − D_o / D_e from the coincidence matrix (Krippendorff 2011, "Computing Krippendorff's
  Alpha-Reliability").
- `majority`, `annotator_report`: per-item majority and each annotator's agreement with the others.

Chance-corrected coefficients are 1 for perfect agreement, 0 for agreement at chance level and
negative below it. A coefficient whose chance term leaves nothing to correct (every value the same
category, so expected disagreement is 0) is 0 / 0: undefined, returned as None, as is every metric
with no data to measure.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from numbers import Real
from typing import Any, Literal

Level = Literal["nominal", "ordinal", "interval", "ratio"]
"""Krippendorff's levels of measurement: which differences between two values count, and how much."""


def _pairable(units: Mapping[Hashable, Sequence[Any]]) -> list[list[Any]]:
    """The non-missing values of each unit that has at least two of them."""
    kept = ([v for v in values if v is not None] for values in units.values())
    return [values for values in kept if len(values) >= 2]


def units_from_judgments(judgments: Iterable[tuple[Hashable, Hashable, Any]]) -> dict[Hashable, list[Any]]:
    """Units {item: [value, ...]} from (annotator, item, value) triples, items in first-seen order.

    An annotator who judged an item more than once counts once, with their last value (a re-label
    replaces the earlier one), so each unit holds one value per annotator.
    """
    latest: dict[Hashable, dict[Hashable, Any]] = {}
    for annotator, item, value in judgments:
        latest.setdefault(item, {})[annotator] = value
    return {item: list(by_annotator.values()) for item, by_annotator in latest.items()}


def raw_agreement(units: Mapping[Hashable, Sequence[Hashable]]) -> float | None:
    """Pairwise percent agreement: Σ_u #{agreeing pairs in u} / Σ_u C(m_u, 2).

    m_u is the number of (non-missing) values of item u and pairs are unordered annotator pairs within
    one item, so an item with more annotators weighs more (it holds more pairs). Items with fewer than
    two values are ignored; None when no item has two.
    """
    agreeing = pairs = 0
    for values in _pairable(units):
        m = len(values)
        pairs += m * (m - 1) // 2
        agreeing += sum(n * (n - 1) // 2 for n in Counter(values).values())
    return agreeing / pairs if pairs else None


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float | None:
    """Cohen's κ of two annotators' labels on the same items: κ = (p_o − p_e) / (1 − p_e).

    `a[i]` and `b[i]` are the two labels of item i (raises ValueError if the lengths differ). Items
    where either label is None are left out. Over the N remaining items:
    p_o = (1/N) Σ_i [a_i = b_i] and p_e = Σ_c p_a(c) p_b(c), where p_a(c) is the share of items `a`
    labelled c (each annotator's own marginals). None when N = 0, or when p_e = 1: both annotators
    used one and the same category throughout, so p_o = 1 too and κ = 0/0 is undefined (sklearn's
    NaN; there is no variation to tell agreement from chance).
    """
    if len(a) != len(b):
        raise ValueError(f"cohen_kappa needs aligned labels: got {len(a)} and {len(b)}")
    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    n = len(pairs)
    if n == 0:
        return None
    p_o = sum(x == y for x, y in pairs) / n
    counts_a = Counter(x for x, _ in pairs)
    counts_b = Counter(y for _, y in pairs)
    p_e = sum(count * counts_b[c] for c, count in counts_a.items()) / (n * n)
    if p_e == 1:
        return None
    return (p_o - p_e) / (1 - p_e)


def fleiss_kappa(units: Mapping[Hashable, Sequence[Hashable]]) -> float | None:
    """Fleiss' κ for many annotators: κ = (P̄ − P_e) / (1 − P_e).

    For item i with n_i ≥ 2 values, n_ij of them in category j:
    P_i = Σ_j n_ij (n_ij − 1) / (n_i (n_i − 1))  (share of agreeing ordered pairs within the item),
    P̄ = the mean of P_i over those items,
    p_j = Σ_i n_ij / Σ_i n_i  (category shares pooled over their ratings), P_e = Σ_j p_j².
    With n_i = n for every item this is Fleiss (1971). With unequal n_i it is the common
    generalisation (each item weighs equally in P̄; p_j pools ratings); it is not Krippendorff's α.
    Items with fewer than two ratings carry no agreement and are left out of p_j as well as P̄.
    None when no item has two ratings, or when P_e = 1 (a single category used throughout: 0/0).
    """
    kept = _pairable(units)
    if not kept:
        return None
    p_bar = 0.0
    totals: Counter[Hashable] = Counter()
    for values in kept:
        n_i = len(values)
        counts = Counter(values)
        totals.update(counts)
        p_bar += sum(n * (n - 1) for n in counts.values()) / (n_i * (n_i - 1))
    p_bar /= len(kept)
    ratings = sum(totals.values())
    p_e = sum((n / ratings) ** 2 for n in totals.values())
    if p_e == 1:
        return None
    return (p_bar - p_e) / (1 - p_e)


def _coincidences(kept: list[list[Any]]) -> dict[tuple[Any, Any], float]:
    """Coincidence matrix o_ck = Σ_u (number of ordered pairs (c, k) of distinct values in u) / (m_u − 1).

    Each pairable value contributes total weight 1, so Σ_k o_ck = n_c, the number of pairable values c.
    """
    o: dict[tuple[Any, Any], float] = {}
    for values in kept:
        weight = 1 / (len(values) - 1)
        counts = Counter(values)
        for c, n_c in counts.items():
            for k, n_k in counts.items():
                pairs = n_c * (n_c - 1) if c == k else n_c * n_k
                if pairs:
                    o[c, k] = o.get((c, k), 0.0) + pairs * weight
    return o


def _ordinal_delta(marginals: Counter[Any]) -> dict[tuple[Any, Any], float]:
    """Ordinal δ²_ck = (Σ_{g=c..k} n_g − (n_c + n_k) / 2)², values ranked by sorting them."""
    ranked = sorted(marginals)
    cumulative = [0.0]
    for value in ranked:
        cumulative.append(cumulative[-1] + marginals[value])
    delta: dict[tuple[Any, Any], float] = {}
    for i, c in enumerate(ranked):
        for j, k in enumerate(ranked):
            lo, hi = min(i, j), max(i, j)
            between = cumulative[hi + 1] - cumulative[lo]  # Σ n_g for g from the lower to the higher value
            delta[c, k] = (between - (marginals[c] + marginals[k]) / 2) ** 2
    return delta


def _metric_delta(c: Any, k: Any, level: Level) -> float:
    """δ²_ck for the interval ((c − k)²) and ratio (((c − k)/(c + k))²) levels."""
    if c == k:
        return 0.0
    if level == "interval":
        return float(c - k) ** 2
    return ((c - k) / (c + k)) ** 2


def krippendorff_alpha(units: Mapping[Hashable, Sequence[Any]], level: Level = "nominal") -> float | None:
    """Krippendorff's α = 1 − D_o / D_e = 1 − (n − 1) Σ_ck o_ck δ²_ck / Σ_ck n_c n_k δ²_ck.

    Computed as in Krippendorff (2011): only pairable values count (units with at least two
    non-missing values; a unit's missing values are simply absent). o_ck is the coincidence matrix
    (each unit with m_u values adds 1/(m_u − 1) for every ordered pair of its values from different
    annotators), n_c = Σ_k o_ck and n = Σ_c n_c is the number of pairable values. Differences δ²_ck:

    - nominal: 0 if c = k else 1 (any hashable values);
    - ordinal: (Σ_{g=c..k} n_g − (n_c + n_k)/2)², over the sorted distinct values (any orderable
      values: only their order and the marginals n_g matter);
    - interval: (c − k)² (numbers);
    - ratio: ((c − k)/(c + k))² (non-negative numbers; 0 between two zeros).

    None when there are no pairable values, or when D_e = 0 (every pairable value is the same, so
    there is no variation to measure agreement on). Raises ValueError for an unknown level, for
    non-numeric values (bools included) at the interval / ratio level and for negative ones at the ratio level.
    """
    if level not in ("nominal", "ordinal", "interval", "ratio"):
        raise ValueError(f"unknown level {level!r}: expected nominal, ordinal, interval or ratio")
    kept = _pairable(units)
    if not kept:
        return None
    values = {v for unit in kept for v in unit}
    if level in ("interval", "ratio"):
        for v in values:
            if isinstance(v, bool) or not isinstance(v, Real):
                raise ValueError(f"{level} alpha needs numeric values, got {v!r}")
            if level == "ratio" and v < 0:
                raise ValueError(f"ratio alpha needs non-negative values, got {v!r}")
    o = _coincidences(kept)
    marginals: Counter[Any] = Counter(v for unit in kept for v in unit)
    n = sum(marginals.values())
    ordinal = _ordinal_delta(marginals) if level == "ordinal" else {}

    def delta(c: Any, k: Any) -> float:
        if level == "nominal":
            return float(c != k)
        if level == "ordinal":
            return ordinal[c, k]
        return _metric_delta(c, k, level)

    observed = sum(count * delta(c, k) for (c, k), count in o.items())
    expected = sum(n_c * n_k * delta(c, k) for c, n_c in marginals.items() for k, n_k in marginals.items())
    if expected == 0:
        return None
    return 1 - (n - 1) * observed / expected


def majority(values: Sequence[Hashable]) -> tuple[Hashable | None, int]:
    """The most frequent value and its count; (None, top count) when two or more values tie for the top.

    None entries are missing and not counted; no values at all gives (None, 0). The majority is a strict
    plurality (more votes than any other value), not necessarily more than half of the votes.
    """
    ranked = Counter(v for v in values if v is not None).most_common(2)
    if not ranked:
        return None, 0
    if len(ranked) == 2 and ranked[1][1] == ranked[0][1]:
        return None, ranked[0][1]
    return ranked[0]


def annotator_report(judgments: Iterable[tuple[Hashable, Hashable, Any]]) -> dict[Hashable, dict[str, Any]]:
    """Per annotator, in first-seen order: how much they label and how often they side with the others.

    - `count`: the items they judged (a re-label of the same item replaces the earlier value);
    - `items_with_others`: those of their items that at least one other annotator also judged;
    - `agreement_with_majority`: over their items where the OTHER annotators' values have a strict
      majority (`majority`: a plurality without a tie; a single other annotator is one), the share
      where their value equals it. None when no item of theirs has such a majority.
    Judgments whose value is None are missing and ignored.
    """
    by_item: dict[Hashable, dict[Hashable, Any]] = {}
    annotators: dict[Hashable, None] = {}
    for annotator, item, value in judgments:
        if value is None:
            continue
        annotators.setdefault(annotator, None)
        by_item.setdefault(item, {})[annotator] = value
    report: dict[Hashable, dict[str, Any]] = {}
    for annotator in annotators:
        count = with_others = compared = agreed = 0
        for by_annotator in by_item.values():
            if annotator not in by_annotator:
                continue
            count += 1
            others = [v for a, v in by_annotator.items() if a != annotator]
            if not others:
                continue
            with_others += 1
            top, _ = majority(others)
            if top is not None:
                compared += 1
                agreed += by_annotator[annotator] == top
        report[annotator] = {
            "count": count,
            "agreement_with_majority": agreed / compared if compared else None,
            "items_with_others": with_others,
        }
    return report
