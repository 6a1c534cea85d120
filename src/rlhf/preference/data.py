"""Preference data for training: records read, held out and turned into groups, the same way for the
reward model, DPO and RRHF."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from rlhf.config.core import ConfigError
from rlhf.config.parts import DataConfig, PromptConfig
from rlhf.losses.reward import Ties
from rlhf.preference.groups import Group, build_groups, label_targets, layout_groups, loss_mode, resolve_loss


@dataclass
class PreferenceDataSpec:
    """What to read and how to turn it into groups (the fields of a stage's config that say so)."""

    data: DataConfig
    """The training file and its reading settings."""
    prompt: PromptConfig
    """How prompts are laid out (template, system prompt)."""
    seed: int
    """Seed of the held-out split."""
    eval_path: str | None = None
    """A held-out file of the same kind; else `eval_fraction` of the prompts are held out."""
    eval_fraction: float = 0.0
    """Share of records held out when `eval_path` is not given."""
    loss: str = "auto"
    """The loss the groups are for (`auto`: the natural one of the data's kind)."""
    ties: Ties = "skip"
    """Ranking/rating ties: left out of the pairs (`skip`) or kept as tie pairs (`half`)."""
    margin: bool = False
    """Keep comparisons' margins (pairwise loss with a margin)."""
    positive_labels: list[str] | None = None
    """Label values that count as good (label data); None: the defaults."""
    negative_labels: list[str] | None = None
    """Label values that count as bad (label data); None: the defaults."""


@dataclass
class PreferenceData:
    """Training and held-out groups, built once before the model loads."""

    train: list[Group]
    held_out: list[Group]
    loss: str
    """The resolved loss (`auto` replaced)."""
    counts: dict[str, int]
    """records, groups, completions, pairs (pairwise modes) of training; the same prefixed `eval_`."""
    summary: str
    """One line on what was loaded, held out and derived."""
    report: dict[str, Any]
    """The training data's load report (`LoadReport.as_dict`: skipped rows by problem, ...)."""


def build_preference_data(spec: PreferenceDataSpec, tokenizer) -> PreferenceData:
    """Read `spec.data`, hold out `spec.eval_path` or a fraction, and turn both into groups (every
    completion tokenized once), with counts and a one-line summary. The reward, DPO and RRHF stages
    share it, so a file is read, split and expanded the same way by each."""
    from rlhf.data import PromptRenderer, load_records
    from rlhf.data.split import split_eval

    loaded = load_records(spec.data, expect="reward")
    loss = resolve_loss(spec.loss, loaded.kind)
    records, by_source = weigh_sources(loaded.records, spec.data.sources)
    held_out: list = []
    if spec.eval_path:
        other = load_records(dataclasses.replace(spec.data, path=spec.eval_path, limit=None), expect="reward")
        if other.kind != loaded.kind:
            raise ConfigError(f"`eval.path` holds {other.kind} data but `data.path` holds {loaded.kind} data")
        held_out = weigh_sources(other.records, spec.data.sources)[0]
    elif spec.eval_fraction > 0:
        records, held_out = split_eval(records, spec.eval_fraction, spec.seed)
    renderer = PromptRenderer(spec.prompt, tokenizer)
    labels = label_targets(spec.positive_labels, spec.negative_labels)
    scale = loaded.rating_scale  # `data.rating_scale`, or the dataset's own (HelpSteer's 0-4)

    def groups_of(recs):
        return build_groups(
            recs, loss, renderer, tokenizer, max_length=spec.data.max_length,
            max_prompt_length=spec.data.max_prompt_length, use_margin=spec.margin, rating_scale=scale, labels=labels,
        )  # fmt: skip

    train, stats = groups_of(records)
    evals = groups_of(held_out)[0] if held_out else []
    counts = {
        **_counts(records, train, loss, spec.ties),
        **_counts(held_out, evals, loss, spec.ties, "eval_"),
    }
    text = (
        f"{loaded.report.summary()}; format `{loaded.format}`; loss `{loss}`; {counts['records']} records -> "
        f"{counts['groups']} groups, {counts['completions']} completions"
    )
    if "pairs" in counts:
        text += f", {counts['pairs']} pairs (ties: {spec.ties})"
    text += f"; {stats.summary()}"
    if by_source:
        text += "; feedback sources: " + ", ".join(f"{name} {line}" for name, line in by_source.items())
    if held_out:
        unit = (
            f"{counts['eval_pairs']} pairs"
            if "eval_pairs" in counts
            else f"{counts['eval_completions']} completions"
        )
        text += f"; {len(held_out)} records held out ({unit})"
    return PreferenceData(train, evals, loss, counts, text, loaded.report.as_dict())


def weigh_sources(records: list, sources: dict[str, float] | None) -> tuple[list, dict[str, str]]:
    """`records` weighted by `data.sources` (see `DataConfig.sources`), and per source what became of
    its rows (`{}` when `sources` is None)."""
    if sources is None:
        return records, {}
    kept: list = []
    counts: dict[str, list] = {}  # source -> [rows, weight]
    for record in records:
        source = str(getattr(record, "meta", {}).get("feedback_source", "people"))
        weight = sources.get(source, 0.0)
        counts.setdefault(source, [0, weight])[0] += 1
        if weight == 0:
            continue
        if hasattr(record, "weight"):
            record = dataclasses.replace(record, weight=record.weight * weight)
        elif weight != 1:
            raise ConfigError(
                f"`data.sources` weighs {source} by {weight:g}, but {record.kind} rows carry no weight: "
                "use 1 (keep) or 0 (leave out)"
            )
        kept.append(record)
    if not kept:
        raise ConfigError(
            f"`data.sources` {sources} leaves out every row (sources found: {', '.join(counts)})"
        )
    lines = {s: f"{n} rows" + (f" x{w:g}" if w else " left out") for s, (n, w) in counts.items()}
    return kept, lines


def _counts(records: list, groups: list[Group], loss: str, ties: Ties, prefix: str = "") -> dict[str, int]:
    out = {
        "records": len(records),
        "groups": len(groups),
        "completions": sum(len(g.input_ids) for g in groups),
    }
    if groups and loss_mode(loss) not in ("regression", "label"):
        out["pairs"] = sum(layout_groups(groups, loss_mode(loss), ties).pair_counts)
    return {prefix + k: v for k, v in out.items()}
