"""Normalizers for public preference datasets in their published schemas, read as they are
distributed (no conversion script): OpenAI's summarize-from-feedback comparisons, Stanford SHP,
StackExchange-paired, PKU-SafeRLHF, Nectar, HelpSteer2/3 and UltraFeedback (raw).

`data.attribute` picks the judgment of a dataset that holds several: SHP `margin` (the log
score ratio as each pair's margin); PKU-SafeRLHF `better` (default) or `safer`; HelpSteer
`helpfulness` (default), `correctness`, `coherence`, `complexity` or `verbosity`, or a weighted
sum of them (`0.65*helpfulness + 0.8*correctness - 0.4*verbosity`); UltraFeedback `overall` (default, `overall_score`), `fine-grained`
(`fine-grained_score`), or one annotated aspect (`helpfulness`, `honesty`,
`instruction_following`, `truthfulness`).
"""

from __future__ import annotations

import functools
import math
import re
from typing import Any

from rlhf.data.errors import describe_value
from rlhf.data.fields import NormalizeContext, RowView, check_number, check_text
from rlhf.data.preferences import check_differ, check_ranking
from rlhf.data.records import Comparison, Label, Ranking, Rating

HELPSTEER_ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
HELPSTEER_SCALE = (0.0, 4.0)
"""HelpSteer2/3 score each attribute 0-4."""
ULTRAFEEDBACK_ASPECTS = ("helpfulness", "honesty", "instruction_following", "truthfulness")
ULTRAFEEDBACK_SCALES = {"overall": (1.0, 10.0), "fine-grained": (1.0, 5.0)}
"""UltraFeedback's `overall_score` is its critique's 1-10; `fine-grained_score` and each aspect's
`Rating` are 1-5."""
_TERM = re.compile(r"\s*([+-]?)\s*(?:(\d+(?:\.\d*)?|\.\d+)\s*\*\s*)?([a-z_]+)\s*")


@functools.lru_cache(maxsize=32)
def helpsteer_weights(attribute: str | None) -> dict[str, float]:
    """`data.attribute` for HelpSteer as weights: one attribute (`correctness`), or a weighted sum
    (`0.65*helpfulness + 0.8*correctness - 0.4*verbosity`). ValueError says what is wrong."""
    text = attribute or "helpfulness"
    weights: dict[str, float] = {}
    at = 0
    for match in _TERM.finditer(text):
        sign, number, name = match.groups()
        if match.start() != at or (at and not sign):
            break
        if name not in HELPSTEER_ATTRIBUTES:
            raise ValueError(f"{name!r} is not one of this dataset's: {', '.join(HELPSTEER_ATTRIBUTES)}")
        if name in weights:
            raise ValueError(f"{name!r} is weighted twice in {text!r}")
        weights[name] = (-1.0 if sign == "-" else 1.0) * float(number or 1.0)
        at = match.end()
    if at != len(text) or not weights:
        raise ValueError(
            f"{text!r} is neither one of this dataset's ({', '.join(HELPSTEER_ATTRIBUTES)}) nor a "
            "weighted sum of them such as `0.65*helpfulness + 0.8*correctness - 0.4*verbosity`"
        )
    return weights


def helpsteer_scale(attribute: str | None) -> tuple[float, float]:
    """The scale of `data.attribute`'s score: 0-4 for one attribute, the weighted sum's range
    for several (each weight times 0 and 4)."""
    weights = helpsteer_weights(attribute)
    low, high = HELPSTEER_SCALE
    return (
        sum(min(w * low, w * high) for w in weights.values()),
        sum(max(w * low, w * high) for w in weights.values()),
    )


def ultrafeedback_scale(attribute: str | None) -> tuple[float, float]:
    """The scale of UltraFeedback's score on `data.attribute` (default overall)."""
    return ULTRAFEEDBACK_SCALES.get(attribute or "overall", (1.0, 5.0))


def _attribute(ctx: NormalizeContext, row: RowView, allowed: tuple[str, ...], default: str) -> str:
    chosen = ctx.attribute or default
    if chosen not in allowed:
        raise row.fail(
            None, f"`data.attribute` {chosen!r} is not one of this dataset's: {', '.join(allowed)}"
        )
    return chosen


def _objects(row: RowView, key: str, shape: str) -> list[dict[str, Any]]:
    """Field `key`: a list of objects (`shape` says what each holds, for the error)."""
    value = row.require(key)
    if not isinstance(value, list):
        raise row.fail(key, f"expected a list of {shape}")
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise row.fail(f"{key}[{i}]", f"expected an object {shape}")
    return value


def summarize_comparisons(row: RowView, ctx: NormalizeContext) -> list[Comparison]:
    """OpenAI summarize-from-feedback: {info: {post|article, title?, subreddit?}, summaries:
    [{text}, {text}], choice}. The prompt is the post in the paper's TL;DR layout."""
    info = row.require("info")
    if not isinstance(info, dict):
        raise row.fail("info", "expected an object with the post (`post` or `article`)")
    body_key = "post" if info.get("post") else "article"
    body = check_text(info.get(body_key), f"info.{body_key}", row.source)
    header = "".join(
        f"{label}: {check_text(info[key], f'info.{key}', row.source)}\n"
        for label, key in (("SUBREDDIT", "subreddit"), ("TITLE", "title"))
        if info.get(key)
    )
    prompt = f"{header}{'POST' if body_key == 'post' else 'ARTICLE'}: {body}\n\nTL;DR:"
    summaries = row.require("summaries")
    if not isinstance(summaries, list) or len(summaries) != 2:
        raise row.fail("summaries", "expected a list of the 2 compared summaries")
    texts = [_summary(summary, i, row) for i, summary in enumerate(summaries)]
    choice = check_number(row.require("choice"), "choice", row.source)
    if choice not in (0, 1):
        raise row.fail("choice", f"expected 0 or 1 (the preferred summary), got {choice}")
    chosen, rejected = texts[int(choice)], texts[1 - int(choice)]
    check_differ(row, chosen, rejected)
    return [Comparison(prompt, chosen, rejected, row.source, meta=row.meta())]


def _summary(value: Any, index: int, row: RowView) -> str:
    if not isinstance(value, dict):
        raise row.fail(f"summaries[{index}]", "expected an object with the summary's `text`")
    return check_text(value.get("text"), f"summaries[{index}].text", row.source).removeprefix(" ")


def shp(row: RowView, ctx: NormalizeContext) -> list[Comparison]:
    """Stanford SHP: {history, human_ref_A, human_ref_B, labels (1: A preferred), score_A, score_B}.
    With `data.attribute: margin`, each pair's margin is the log of its score ratio (SHP keeps
    pairs whose preferred answer has at least twice the other's score: margins from log 2 up)."""
    attribute = _attribute(ctx, row, ("labels", "margin"), "labels")
    prompt = row.text("history")
    a, b = row.text("human_ref_A"), row.text("human_ref_B")
    label = check_number(row.require("labels"), "labels", row.source)
    if label not in (0, 1):
        raise row.fail("labels", f"expected 1 (A preferred) or 0 (B preferred), got {label}")
    chosen, rejected = (a, b) if label == 1 else (b, a)
    check_differ(row, chosen, rejected)
    margin = None
    if attribute == "margin":
        scores = [check_number(row.require(key), key, row.source) for key in ("score_A", "score_B")]
        high, low = (scores[0], scores[1]) if label == 1 else (scores[1], scores[0])
        if not high > low > 0:
            raise row.fail("score_A" if label == 1 else "score_B", f"a margin needs the preferred answer's score "
                           f"above the other's and both positive, got {high:g} and {low:g}")  # fmt: skip
        margin = math.log(high / low)
    return [Comparison(prompt, chosen, rejected, row.source, margin=margin, meta=row.meta())]


def stack_exchange_paired(row: RowView, ctx: NormalizeContext) -> list[Comparison]:
    """StackExchange-paired: {question, response_j, response_k}; `response_j` is the preferred answer."""
    prompt = row.text("question")
    chosen, rejected = row.text("response_j"), row.text("response_k")
    check_differ(row, chosen, rejected)
    return [Comparison(prompt, chosen, rejected, row.source, meta=row.meta())]


def pku_saferlhf(row: RowView, ctx: NormalizeContext) -> list[Comparison]:
    """PKU-SafeRLHF: {prompt, response_0, response_1, better_response_id, safer_response_id, ...};
    the pair is ordered by `data.attribute`: `better` (helpfulness, the default) or `safer`."""
    attribute = _attribute(ctx, row, ("better", "safer"), "better")
    prompt = row.text("prompt")
    responses = [row.text("response_0"), row.text("response_1")]
    key = f"{attribute}_response_id"
    winner = check_number(row.require(key), key, row.source)
    if winner not in (0, 1):
        raise row.fail(key, f"expected 0 or 1, got {winner}")
    chosen, rejected = responses[int(winner)], responses[1 - int(winner)]
    check_differ(row, chosen, rejected)
    return [Comparison(prompt, chosen, rejected, row.source, meta=row.meta())]


def pku_saferlhf_labels(row: RowView, ctx: NormalizeContext) -> list[Label]:
    """PKU-SafeRLHF's safety flags as labels (`data.format: pku_saferlhf_labels`): each response
    `safe` or `unsafe` by its `is_response_N_safe`, two records a row."""
    prompt = row.text("prompt")
    labels = []
    for n in (0, 1):
        flag = row.require(f"is_response_{n}_safe")
        if not isinstance(flag, bool):
            raise row.fail(f"is_response_{n}_safe", f"expected true or false, got {describe_value(flag)}")
        response = row.text(f"response_{n}")
        labels.append(Label(prompt, response, "safe" if flag else "unsafe", row.source, meta=row.meta()))
    return labels


def nectar(row: RowView, ctx: NormalizeContext) -> list[Ranking]:
    """Nectar: {prompt (an HH-style transcript), answers: [{answer, model, rank}]}: a K-way ranking
    (rank 1 best)."""
    prompt = row.text("prompt")
    texts, ranks = [], []
    for i, answer in enumerate(_objects(row, "answers", "{answer, model, rank}")):
        texts.append(check_text(answer.get("answer"), f"answers[{i}].answer", row.source))
        ranks.append(check_number(answer.get("rank"), f"answers[{i}].rank", row.source))
    check_ranking(row, texts, ranks, ctx.allow_ties, field="answers")
    return [Ranking(prompt, texts, ranks, row.source, meta=row.meta())]


def helpsteer(row: RowView, ctx: NormalizeContext) -> list[Rating]:
    """HelpSteer2/3: {prompt, response, helpfulness, correctness, coherence, complexity, verbosity},
    each 0-4: a rating on `data.attribute` (default helpfulness), or on a weighted sum of them."""
    try:
        weights = helpsteer_weights(ctx.attribute)
    except ValueError as err:
        raise row.fail(None, f"`data.attribute` {err}") from None
    prompt, response = row.text("prompt"), row.text("response")
    score = 0.0
    for name, weight in weights.items():
        value = row.number(name)
        if not HELPSTEER_SCALE[0] <= value <= HELPSTEER_SCALE[1]:
            raise row.fail(name, f"{value:g} is outside HelpSteer's scale [0, 4]")
        score += weight * value
    low, high = ctx.rating_scale or helpsteer_scale(ctx.attribute)
    if not low <= score <= high:
        raise row.fail(
            next(iter(weights)), f"the score {score:g} is outside `data.rating_scale` [{low:g}, {high:g}]"
        )
    return [Rating(prompt, response, score, row.source, meta=row.meta())]


def ultrafeedback(row: RowView, ctx: NormalizeContext) -> list[Ranking]:
    """UltraFeedback (raw): {instruction, completions: [{response, overall_score, fine-grained_score,
    annotations: {aspect: {Rating}}}]}: a ranking of the completions by `data.attribute`'s score
    (highest first; equal scores tie). Completions without a score (`N/A`) are left out and counted."""
    attribute = _attribute(ctx, row, ("overall", "fine-grained", *ULTRAFEEDBACK_ASPECTS), "overall")
    prompt = row.text("instruction")
    texts, scores = [], []
    for i, completion in enumerate(_objects(row, "completions", "{response, overall_score, annotations}")):
        score = _ultrafeedback_score(completion, attribute, i, row)
        if score is None:
            ctx.report.leave_out(f"completions without a {attribute} score")
            continue
        texts.append(check_text(completion.get("response"), f"completions[{i}].response", row.source))
        scores.append(score)
    if len(texts) < 2:
        ctx.report.leave_out(f"rows with fewer than 2 completions scored on {attribute}")
        return []
    order = sorted(set(scores), reverse=True)
    ranks: list[int | float] = [order.index(score) for score in scores]  # 0: the best score
    check_ranking(row, texts, ranks, ctx.allow_ties)
    return [Ranking(prompt, texts, ranks, row.source, meta=row.meta())]


def ultrafeedback_ratings(row: RowView, ctx: NormalizeContext) -> list[Rating]:
    """UltraFeedback (raw) as ratings (`data.format: ultrafeedback_ratings`): each completion its
    score on `data.attribute` (see `ultrafeedback`), on that score's own scale; completions
    without one are left out and counted."""
    attribute = _attribute(ctx, row, ("overall", "fine-grained", *ULTRAFEEDBACK_ASPECTS), "overall")
    prompt = row.text("instruction")
    low, high = ctx.rating_scale or ultrafeedback_scale(attribute)
    ratings = []
    for i, completion in enumerate(_objects(row, "completions", "{response, overall_score, annotations}")):
        score = _ultrafeedback_score(completion, attribute, i, row)
        if score is None:
            ctx.report.leave_out(f"completions without a {attribute} score")
            continue
        if not low <= score <= high:
            raise row.fail(
                f"completions[{i}]", f"the {attribute} score {score:g} is outside [{low:g}, {high:g}]"
            )
        response = check_text(completion.get("response"), f"completions[{i}].response", row.source)
        ratings.append(Rating(prompt, response, score, row.source, meta=row.meta()))
    return ratings


def _ultrafeedback_score(completion: dict, attribute: str, index: int, row: RowView) -> float | None:
    """The completion's score on `attribute`, None when the dataset gives none (`N/A`, null)."""
    if attribute in ("overall", "fine-grained"):
        key = f"{attribute}_score"
        value, field = completion.get(key), f"completions[{index}].{key}"
    else:
        annotation = (completion.get("annotations") or {}).get(attribute)
        value = annotation.get("Rating") if isinstance(annotation, dict) else None
        field = f"completions[{index}].annotations.{attribute}.Rating"
    if value is None or value == "N/A":
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise row.fail(field, f"expected a score, got {value!r}") from None
    return float(check_number(value, field, row.source))
