"""Normalizers for public preference datasets in their published schemas, read as they are
distributed (no conversion script): OpenAI's summarize-from-feedback comparisons, Stanford SHP,
StackExchange-paired, PKU-SafeRLHF, Nectar, HelpSteer2/3 and UltraFeedback (raw).

`data.attribute` picks the judgment of a dataset that holds several: SHP `margin` (the log
score ratio as each pair's margin); PKU-SafeRLHF `better` (default) or `safer`; HelpSteer `helpfulness` (default), `correctness`, `coherence`, `complexity` or
`verbosity`; UltraFeedback `overall` (default, `overall_score`), `fine-grained`
(`fine-grained_score`), or one annotated aspect (`helpfulness`, `honesty`,
`instruction_following`, `truthfulness`).
"""

from __future__ import annotations

import math
from typing import Any

from rlhf.data.errors import describe_value
from rlhf.data.fields import NormalizeContext, RowView, check_number, check_text
from rlhf.data.preferences import check_differ, check_ranking
from rlhf.data.records import Comparison, Label, Ranking, Rating

HELPSTEER_ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
HELPSTEER_SCALE = (0.0, 4.0)
"""HelpSteer2/3 score each attribute 0-4."""
ULTRAFEEDBACK_ASPECTS = ("helpfulness", "honesty", "instruction_following", "truthfulness")


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
    each 0-4: a rating on `data.attribute` (default helpfulness)."""
    attribute = _attribute(ctx, row, HELPSTEER_ATTRIBUTES, "helpfulness")
    prompt, response = row.text("prompt"), row.text("response")
    score = row.number(attribute)
    low, high = ctx.rating_scale or HELPSTEER_SCALE
    if not low <= score <= high:
        raise row.fail(attribute, f"{score:g} is outside HelpSteer's scale [{low:g}, {high:g}]")
    return [Rating(prompt, response, float(score), row.source, meta=row.meta())]


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
