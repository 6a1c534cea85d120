"""The feedback stage: preference pairs for the reward model, from simulated labelers or a file.

Simulated labelers judge every pair of distinct candidates of a prompt: each prefers the one with
the higher gold score with Bradley-Terry probability sigmoid(Δgold / temperature), independently,
so they disagree as people do; how often is measured with the labeling app's agreement statistics.
Prompts are split into training and held-out ones, so the reward model is scored on prompts it never
saw. Plain Python (no torch).
"""

from __future__ import annotations

import itertools
import json
import math
import random
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf.data.errors import DataError
from rlhf.data.jsonl import read_jsonl as load_jsonl
from rlhf.data.text import seen_as
from rlhf.files import write_jsonl_atomic
from rlhf.label.agreement import krippendorff_alpha, raw_agreement

GoldFn = Callable[[Sequence[Any], Sequence[str]], Sequence[float]]
"""gold(prompts as in the file (text or messages), completions) -> one score per completion."""

TRAIN_FILE, HELDOUT_FILE, HELDOUT_GOLD_FILE, STATS_FILE = (
    "pairs.jsonl", "heldout.jsonl", "heldout_gold.jsonl", "feedback.json",
)  # fmt: skip


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file; a bad line is an error naming file and line, a missing file an OSError."""
    rows = load_jsonl(Path(path))
    if rows is None:
        raise FileNotFoundError(f"{path}: no such file")
    return rows


def bradley_terry(gold_a: float, gold_b: float, temperature: float) -> float:
    """P(a labeler prefers a over b) = sigmoid((gold_a - gold_b) / temperature), without overflow."""
    z = (gold_a - gold_b) / temperature
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def prompt_key(prompt: Any) -> str:
    return json.dumps(prompt, sort_keys=True, ensure_ascii=False)


def heldout_prompts(keys: Sequence[str], fraction: float, seed: int) -> set[str]:
    """The prompts kept out of training: a seeded sample, at least one, never all of them."""
    unique = sorted(set(keys))
    if len(unique) < 2:
        raise DataError(
            None,
            None,
            None,
            f"feedback: {len(unique)} distinct prompt(s); the held-out split needs 2 or more",
        )
    count = min(len(unique) - 1, max(1, round(fraction * len(unique))))
    return set(random.Random(seed).sample(unique, count))


def pairs_to_judge(
    rows: list[dict[str, Any]], held: set[str], allowed: set | None, path: str
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Every pair of a candidates file to judge, in file order — {row (0-based), a, b (completion
    indices), prompt, completions, held} — and the pairs left out (`empty`, `identical`: the same
    answer to a reader). Training prompts' pairs only where `allowed` (the selection) has them."""
    pairs: list[dict[str, Any]] = []
    dropped = {"empty": 0, "identical": 0}
    for number, row in enumerate(rows, 1):
        prompt, completions = row.get("prompt"), row.get("completions")
        if not isinstance(completions, list) or not all(isinstance(c, str) for c in completions):
            raise DataError(path, number, "completions", "expected a list of strings")
        is_held = prompt_key(prompt) in held
        for a, b in itertools.combinations(range(len(completions)), 2):
            if allowed is not None and not is_held and (number - 1, a, b) not in allowed:
                continue  # not chosen for labeling
            if not completions[a].strip() or not completions[b].strip():
                dropped["empty"] += 1
            elif seen_as(completions[a]) == seen_as(completions[b]):
                dropped["identical"] += 1
            else:
                pairs.append({"row": number - 1, "a": a, "b": b, "prompt": prompt, "completions": completions,
                              "held": is_held})  # fmt: skip
    return pairs, dropped


def simulate(
    candidates_path: str | Path,
    gold: GoldFn,
    out_dir: str | Path,
    *,
    labelers: int = 3,
    temperature: float = 1.0,
    resolve: str = "majority",
    heldout_fraction: float = 0.15,
    seed: int = 0,
    selection: Selection | None = None,
) -> dict[str, Any]:
    """Judge every pair of distinct candidates (of the training prompts: those `selection` picks);
    write train/held-out pairs and `feedback.json`."""
    rows = read_jsonl(candidates_path)
    rng = random.Random(seed)
    out_dir = Path(out_dir)
    held = heldout_prompts([prompt_key(r.get("prompt")) for r in rows], heldout_fraction, seed)
    allowed, selected = selected_pairs(rows, held, selection, seed, str(candidates_path))
    train: list[dict[str, Any]] = []
    heldout: list[dict[str, Any]] = []
    heldout_gold: list[dict[str, Any]] = []
    units: dict[Hashable, list[int]] = {}
    pairs, dropped = pairs_to_judge(rows, held, allowed, str(candidates_path))
    agree_gold = judged_gold = single_right = single_total = 0
    scored: dict[int, list[float]] = {}  # row -> gold of its completions, computed once per row
    for item in pairs:
        prompt, completions, a, b = item["prompt"], item["completions"], item["a"], item["b"]
        if item["row"] not in scored:
            scored[item["row"]] = gold_scores(gold, prompt, completions)
        scores = scored[item["row"]]
        p_a = bradley_terry(scores[a], scores[b], temperature)
        votes = [0 if rng.random() < p_a else 1 for _ in range(labelers)]  # 0: a wins
        units[len(units)] = votes
        if scores[a] != scores[b]:
            better = 0 if scores[a] > scores[b] else 1
            single_right += sum(v == better for v in votes)
            single_total += labelers
        pair = (completions[a], completions[b])
        made, first = _resolved(prompt, pair, votes, resolve, dropped)
        if first is not None and scores[a] != scores[b]:
            judged_gold += 1
            agree_gold += first == (0 if scores[a] > scores[b] else 1)
        (heldout if item["held"] else train).extend(made)
        if item["held"] and scores[a] != scores[b]:
            win = 0 if scores[a] > scores[b] else 1
            heldout_gold.append(pair_row(prompt, pair[win], pair[1 - win]))
    if not train:
        raise DataError(
            str(candidates_path), None, None, "no pair of distinct, non-empty candidates to judge"
        )
    write_jsonl_atomic(out_dir / TRAIN_FILE, train)
    write_jsonl_atomic(out_dir / HELDOUT_FILE, heldout)
    write_jsonl_atomic(out_dir / HELDOUT_GOLD_FILE, heldout_gold)
    stats = {
        "source": "simulate", "labelers": labelers, "temperature": temperature, "prompts": len(rows),
        "heldout_prompts": len(held), "pairs": len(units), "judgments": len(units) * labelers,
        "train_rows": len(train), "heldout_rows": len(heldout), "heldout_gold_rows": len(heldout_gold),
        "dropped": dropped,
        "raw_agreement": raw_agreement(units) if labelers > 1 else None,
        "krippendorff_alpha": krippendorff_alpha(units, "nominal") if labelers > 1 else None,
        "labeler_gold_accuracy": single_right / single_total if single_total else None,
        "majority_gold_agreement": agree_gold / judged_gold if judged_gold else None,
        "selection": selected,
    }  # fmt: skip
    write_stats(out_dir, stats)
    return stats


def _resolved(
    prompt: Any, pair: tuple[str, str], votes: list[int], resolve: str, dropped: dict[str, int]
) -> tuple[list[dict[str, Any]], int | None]:
    """A pair's rows from its votes (0: the first wins), and the majority's pick (None: no majority
    row, under `resolve: all` or on an even split, which is counted in `dropped`)."""
    if resolve == "all":
        return [pair_row(prompt, pair[v], pair[1 - v], 1.0 / len(votes)) for v in votes], None
    wins_first = votes.count(0)
    if 2 * wins_first == len(votes):  # an even split: no majority, left out
        dropped["split"] = dropped.get("split", 0) + 1
        return [], None
    first = 0 if 2 * wins_first > len(votes) else 1
    return [pair_row(prompt, pair[first], pair[1 - first])], first


@dataclass(frozen=True)
class Selection:
    """Which training pairs are labeled (see `rlhf.active.select`)."""

    rule: str
    """random, uncertainty or disagreement."""
    budget: int
    """Pairs of training prompts to label."""
    per_prompt: int | None = None
    """At most this many pairs from one prompt (None: no cap)."""
    sources: Sequence[Any] = ()
    """Reward sources (`rlhf.rewards.sources`) whose scores the rule reads."""


def selected_pairs(
    rows: list[dict[str, Any]], held: set[str], selection: Selection | None, seed: int, path: str
) -> tuple[set[tuple[int, int, int]] | None, dict[str, Any]]:
    """The (row, a, b) training pairs `selection` picks (None: all of them), and what it saw."""
    if selection is None:
        return None, {"rule": "all"}
    from rlhf.active import choose_pairs, score_candidates

    train = [i for i, r in enumerate(rows) if prompt_key(r.get("prompt")) not in held]
    for i in train:
        completions = rows[i].get("completions")
        if not isinstance(completions, list) or not all(isinstance(c, str) for c in completions):
            raise DataError(path, i + 1, "completions", "expected a list of strings")
    texts = [rows[i]["completions"] for i in train]
    scores = score_candidates(selection.sources, [rows[i].get("prompt") for i in train], texts) or None
    chosen = choose_pairs(
        texts,
        scores,
        rule=selection.rule,
        budget=selection.budget,
        seed=seed,
        per_prompt=selection.per_prompt,
    )
    certainty = [abs(c.preference - 0.5) for c in chosen if c.preference is not None]
    spreads = [c.spread for c in chosen if c.spread is not None]
    return {(train[c.prompt], c.a, c.b) for c in chosen}, {
        "rule": selection.rule, "budget": selection.budget, "per_prompt": selection.per_prompt,
        "pairs": len(chosen), "prompts": len({c.prompt for c in chosen}),
        "mean_distance_from_even": sum(certainty) / len(certainty) if certainty else None,
        "mean_spread": sum(spreads) / len(spreads) if spreads else None, "models": len(selection.sources),
    }  # fmt: skip


def gold_scores(gold: GoldFn, prompt: Any, completions: list[str]) -> list[float]:
    """The gold score of each of a row's completions; a one-line error unless they are finite."""
    scores = [float(s) for s in gold([prompt] * len(completions), completions)]
    if len(scores) != len(completions) or not all(math.isfinite(s) for s in scores):
        raise DataError(
            None, None, None, f"gold function: expected {len(completions)} finite scores, got {scores!r}"
        )
    return scores


def pair_row(prompt: Any, chosen: str, rejected: str, weight: float | None = None) -> dict[str, Any]:
    row = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
    if weight is not None:
        row["weight"] = weight
    return row


def split_file(
    path: str | Path, out_dir: str | Path, *, heldout_fraction: float, seed: int
) -> dict[str, Any]:
    """People's preferences from a file (e.g. `rlhf label export`): split by prompt, rows kept as they are."""
    rows = read_jsonl(path)
    if not rows:
        raise DataError(str(path), None, None, "no rows")
    missing = [n for n, r in enumerate(rows, 1) if "prompt" not in r]
    if missing:
        raise DataError(str(path), missing[0], "prompt", "missing (the held-out split groups rows by prompt)")
    held = heldout_prompts([prompt_key(r["prompt"]) for r in rows], heldout_fraction, seed)
    train = [r for r in rows if prompt_key(r["prompt"]) not in held]
    heldout = [r for r in rows if prompt_key(r["prompt"]) in held]
    out_dir = Path(out_dir)
    write_jsonl_atomic(out_dir / TRAIN_FILE, train)
    write_jsonl_atomic(out_dir / HELDOUT_FILE, heldout)
    stats = {
        "source": "file",
        "path": str(path),
        "rows": len(rows),
        "train_rows": len(train),
        "heldout_rows": len(heldout),
        "heldout_prompts": len(held),
    }
    write_stats(out_dir, stats)
    return stats


def write_stats(out_dir: Path, stats: dict[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / STATS_FILE).write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")


NEW_PREFIX = "new_"
"""`add_earlier` keeps a round's own rows in `new_<file>` (e.g. `new_heldout_gold.jsonl`)."""


def add_earlier(out_dir: Path, earlier: Path) -> dict[str, Any]:
    """Put an earlier round's pairs (its `pairs.jsonl`, `heldout.jsonl`, `heldout_gold.jsonl`,
    themselves all rounds before it) ahead of this round's, keeping this round's own rows in
    `new_<file>`: the reward model trains on all feedback so far, and the new rows alone measure
    how blind the earlier reward model was to the new policy's samples."""
    counts: dict[str, Any] = {"earlier_feedback": str(earlier)}
    for name in (TRAIN_FILE, HELDOUT_FILE, HELDOUT_GOLD_FILE):
        new_rows = read_jsonl(out_dir / name) if (out_dir / name).is_file() else []
        old_rows = read_jsonl(earlier / name) if (earlier / name).is_file() else []
        write_jsonl_atomic(out_dir / f"{NEW_PREFIX}{name}", new_rows)
        write_jsonl_atomic(out_dir / name, old_rows + new_rows)
        counts[f"{name.removesuffix('.jsonl')}_rows_all"] = len(old_rows) + len(new_rows)
    return counts
