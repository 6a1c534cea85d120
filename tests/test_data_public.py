"""Public preference datasets in their published schemas (tests/fixtures/data/public: a few records
each, written from the datasets' documentation), read as they are distributed: each is detected,
becomes the kind it is with every record, and a reward model trains on it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from rlhf.config import DataConfig
from rlhf.data import DataError, load_records

PUBLIC = Path(__file__).parent / "fixtures" / "data" / "public"
# (file, detected format, kind, records)
SCHEMAS = [
    ("summarize_feedback_comparisons.jsonl", "summarize_feedback", "comparison", 3),
    ("shp.jsonl", "shp", "comparison", 3),
    ("stack_exchange_paired.jsonl", "stack_exchange_paired", "comparison", 3),
    ("pku_saferlhf.jsonl", "pku_saferlhf", "comparison", 3),
    ("nectar.jsonl", "nectar", "ranking", 2),
    ("helpsteer2.jsonl", "helpsteer", "rating", 3),
    ("ultrafeedback.jsonl", "ultrafeedback", "ranking", 2),
    ("hh_train.jsonl.gz", "hh", "comparison", 2),
    ("ultrafeedback_binarized.jsonl", "pairwise", "comparison", 3),  # its pair's own scores: understood
    ("trl_unpaired.jsonl", "label", "label", 4),
]


def load(name: str, **cfg):
    return load_records(DataConfig(path=str(PUBLIC / name), **cfg))


@pytest.mark.parametrize(("name", "fmt", "kind", "count"), SCHEMAS, ids=[s[1] for s in SCHEMAS])
def test_each_schema_is_detected_as_its_kind_with_every_record(name, fmt, kind, count):
    data = load(name)
    assert (data.format, data.kind, len(data.records)) == (fmt, kind, count)
    assert data.report.rows_read == count and not data.report.skipped and not data.report.left_out


def test_what_each_schema_says_is_read_the_way_it_means():
    summary = load("summarize_feedback_comparisons.jsonl").records
    assert summary[0].prompt.startswith("SUBREDDIT: relationships\nTITLE: How do adults make friends")
    assert summary[0].prompt.endswith(
        "board game night, but everyone already seems to have their groups.\n\nTL;DR:"
    )
    assert summary[1].chosen.startswith("Landlord refuses to fix the heater")  # choice 1, leading space gone
    assert summary[2].prompt.startswith("ARTICLE: The city council")  # a CNN/DM item: no subreddit
    shp = load("shp.jsonl").records
    assert shp[0].chosen.startswith("You're probably over-proofing") and shp[1].chosen.startswith(
        "It's a myth"
    )
    assert shp[0].meta["score_A"] == 52  # the rest of the row is kept
    margins = [r.margin for r in load("shp.jsonl", attribute="margin").records]
    assert margins == [math.log(52 / 8), math.log(40 / 3), math.log(120 / 30)]  # the same float64 operations
    assert load("stack_exchange_paired.jsonl").records[0].chosen.startswith("Use slicing")
    better = load("pku_saferlhf.jsonl").records
    safer = load("pku_saferlhf.jsonl", attribute="safer").records
    assert better[2].chosen.startswith("Dear customer") and safer[2].chosen.startswith("I can't write that")
    nectar = load("nectar.jsonl").records[1]
    assert nectar.prompt.endswith("\n\nAssistant:") and nectar.ranks == [1.0, 3.0, 2.0]
    helpful = load("helpsteer2.jsonl").records
    correct = load("helpsteer2.jsonl", attribute="correctness").records
    assert [r.rating for r in helpful] == [4, 0, 3] and [r.rating for r in correct] == [4, 1, 3]
    overall = load("ultrafeedback.jsonl").records
    assert overall[0].ranks == [0, 1, 2] and overall[1].ranks == [0, 1]
    honesty = load("ultrafeedback.jsonl", attribute="honesty")
    assert len(honesty.records[0].completions) == 2  # `N/A` is no score: left out, and counted
    assert honesty.report.left_out == {"completions without a honesty score": 1}


def test_pku_saferlhf_safety_flags_read_as_labels_when_asked():
    data = load("pku_saferlhf.jsonl", format="pku_saferlhf_labels")
    assert (data.kind, len(data.records)) == ("label", 6)  # two responses a row
    assert [r.label for r in data.records] == ["safe", "unsafe", "safe", "safe", "unsafe", "safe"]
    assert data.records[1].completion.startswith("Try common default passwords")


@pytest.mark.slow
def test_a_reward_model_trains_on_the_safety_labels(tmp_path):
    from rlhf.config import load_config
    from rlhf.reward.config import RewardConfig
    from rlhf.reward.train import run_reward

    cfg = load_config(RewardConfig, None, [
        f"data.path={PUBLIC / 'pku_saferlhf.jsonl'}", "data.format=pku_saferlhf_labels", "data.max_length=96",
        "prompt.template=raw", "max_steps=2", "batch_size=2", "eval.fraction=0", f"output_dir={tmp_path}",
        "logging.progress=false", "logging.tensorboard=false",
    ])  # fmt: skip
    summary = run_reward(cfg).summary
    assert summary["loss_type"] == "label" and all(loss == loss for loss in summary["train_loss"])


def test_an_attribute_the_dataset_lacks_is_one_line():
    with pytest.raises(DataError) as info:
        load("helpsteer2.jsonl", attribute="safer")
    assert str(info.value) == (
        f"{PUBLIC / 'helpsteer2.jsonl'}: `data.attribute` 'safer' is not one of this dataset's: "
        "helpfulness, correctness, coherence, complexity, verbosity"
    )
    with pytest.raises(DataError) as info:
        load("pku_saferlhf.jsonl", attribute="kinder")
    assert str(info.value) == (
        f"{PUBLIC / 'pku_saferlhf.jsonl'}:1: `data.attribute` 'kinder' is not one of this dataset's: better, safer"
    )
    for bad, why in [("helpfulness +", "is neither one of this dataset's"), ("2*helpfulness helpfulness", "is neither"),
                     ("helpfulness - helpfulness", "'helpfulness' is weighted twice")]:  # fmt: skip
        with pytest.raises(DataError, match=why):
            load("helpsteer2.jsonl", attribute=bad)


def test_helpsteer_as_a_weighted_sum_of_its_attributes_on_the_sum_s_own_scale():
    """Nemotron-style weights: the rating is the weighted sum, its scale each weight times 0-4."""
    rows = [json.loads(line) for line in (PUBLIC / "helpsteer2.jsonl").read_text().splitlines()]
    data = load("helpsteer2.jsonl", attribute="0.65*helpfulness + 0.8*correctness - 0.4*verbosity")
    expected = [0.65 * r["helpfulness"] + 0.8 * r["correctness"] + -0.4 * r["verbosity"] for r in rows]
    assert [r.rating for r in data.records] == expected  # the same float64 operations, in the same order
    assert data.rating_scale == (-0.4 * 4, 0.65 * 4 + 0.8 * 4)
    assert load("helpsteer2.jsonl", attribute="-verbosity").rating_scale == (-4.0, 0.0)


def test_ultrafeedback_read_as_ratings_on_each_score_s_own_scale():
    """`data.format: ultrafeedback_ratings`: one rating per scored completion; overall is 1-10,
    fine-grained and the aspects 1-5; a completion without the score is left out and counted."""
    overall = load("ultrafeedback.jsonl", format="ultrafeedback_ratings")
    assert (overall.kind, overall.rating_scale) == ("rating", (1.0, 10.0))
    assert [r.rating for r in overall.records] == [9.0, 6.0, 2.0, 8.5, 3.0]
    assert overall.records[0].completion.startswith("Solar: output depends on daylight")
    honesty = load("ultrafeedback.jsonl", format="ultrafeedback_ratings", attribute="honesty")
    assert honesty.rating_scale == (1.0, 5.0) and len(honesty.records) == 4
    assert honesty.report.left_out == {"completions without a honesty score": 1}


TRAINED = [(name, []) for name, *_ in SCHEMAS] + [
    ("helpsteer2.jsonl", ["data.attribute=0.65*helpfulness + 0.8*correctness - 0.4*verbosity"]),
    ("ultrafeedback.jsonl", ["data.format=ultrafeedback_ratings"]),
]
"""Every schema as detected, and the readings a user asks for by name."""


@pytest.mark.slow
@pytest.mark.parametrize(("name", "extra"), TRAINED, ids=[f"{s[0]}{s[1][:1]}" for s in TRAINED])
def test_a_reward_model_trains_on_each(name, extra, tmp_path):
    from rlhf.config import load_config
    from rlhf.reward.config import RewardConfig
    from rlhf.reward.train import run_reward

    cfg = load_config(RewardConfig, None, [
        f"data.path={PUBLIC / name}", "data.max_length=96", "prompt.template=raw", "max_steps=2", "batch_size=2",
        "eval.fraction=0", f"output_dir={tmp_path}", "logging.progress=false", "logging.tensorboard=false",
        *extra,
    ])  # fmt: skip
    summary = run_reward(cfg).summary
    assert len(summary["train_loss"]) == 2 and all(loss == loss for loss in summary["train_loss"])
    assert (tmp_path / "model" / "config.json").is_file()


def test_fields_a_format_does_not_read_are_never_lost_without_a_word(tmp_path):
    """A schema no format knows, with `prompt` among its fields, reads as bare prompts: its
    judgment-like fields are named in the load's summary (every stage prints it) and in `data
    inspect`; a published schema's own extra fields are not flagged."""
    from rlhf.data import inspect_data

    path = tmp_path / "arena.jsonl"
    path.write_text(
        '{"prompt": "Which is better?", "answer_a": "x", "answer_b": "y", "winner": "model_a", "id": 3}\n'
    )
    data = load_records(DataConfig(path=str(path)))
    assert data.format == "prompts" and data.report.unread == {
        "answer_a": 1,
        "answer_b": 1,
        "winner": 1,
        "id": 1,
    }
    assert data.report.summary().endswith(
        "fields not read, that look like judgments: answer_a, answer_b, winner"
    )
    shown = inspect_data(path)
    assert "not read: answer_a (1 rows), answer_b (1 rows), id (1 rows), winner (1 rows)" in shown
    assert (
        "warning:  answer_a, answer_b, winner look like judgments that format `prompts` does not read"
        in shown
    )
    shp = load("shp.jsonl")
    assert shp.report.unread["score_A"] == 3 and shp.report.unread_judgments == []


def test_a_stage_refuses_a_file_whose_unread_fields_look_like_judgments(tmp_path):
    """Every stage loads with an `expect`: fields that would be lost are refused, naming them, the
    first line that has them and the ways on; `data.ignore_fields` trains without the ones listed."""
    path = tmp_path / "arena.jsonl"
    path.write_text(
        '{"prompt": "Hi", "id": 1}\n'
        '{"prompt": "Which is better?", "answer_a": "x", "answer_b": "y", "winner": "model_a", "id": 3}\n'
    )
    with pytest.raises(DataError) as info:
        load_records(DataConfig(path=str(path)), expect="prompt")
    assert str(info.value) == (
        f"{path}:2: format `prompts` (prompt) does not read `answer_a` (1 rows), `answer_b` (1 rows), "
        "`winner` (1 rows), which look like judgments; map them onto a format's fields with `data.fields` "
        "(e.g. `data.fields: {rating: answer_a}`), name the format that reads them in `data.format` "
        "(`rlhf data formats`), or train without them: `data.ignore_fields: [answer_a, answer_b, winner]`"
    )
    with pytest.raises(DataError, match=r"does not read `winner` \(1 rows\), which"):
        load_records(DataConfig(path=str(path), ignore_fields=["answer_a", "answer_b"]), expect="prompt")
    ignored = DataConfig(path=str(path), ignore_fields=["answer_a", "answer_b", "winner"])
    data = load_records(ignored, expect="prompt")
    assert len(data.records) == 2 and data.report.unread_judgments == []


@pytest.mark.parametrize(
    ("name", "judgment"),
    [("score_A", True), ("better_response_id", True), ("response_1", True), ("answers", True),
     ("overallScore", True), ("labels", True), ("summaries", True), ("completion_index", False),
     ("response_model", False), ("num_responses", False), ("corrected_index", False), ("votes", False),
     ("rendered_prompt", False), ("helpfulness", False), ("id", False)],
)  # fmt: skip
def test_which_field_names_look_like_judgments(name, judgment):
    """A judgment word anywhere in the name, or a completion's text unless the name is about one
    (an index, a model, a count): what our own exports carry (`completion_index`) is never flagged."""
    from rlhf.data.errors import looks_like_judgment

    assert looks_like_judgment(name) is judgment


def test_a_field_mapping_reads_a_schema_in_a_few_lines_as_the_built_in_reading_does():
    """`data.fields` maps a file's own fields onto a format's: renamed, nested, a list position
    held by another field, a field name another field completes. On two public schemas it gives
    the built-in reading's very comparisons."""
    mappings = {
        "stack_exchange_paired.jsonl": {"prompt": "question", "chosen": "response_j", "rejected": "response_k"},
        "pku_saferlhf.jsonl": {
            "prompt": "prompt", "chosen": "response_{better_response_id}", "rejected": "response_{1-better_response_id}",
        },
    }  # fmt: skip
    for name, fields in mappings.items():
        built_in, mapped = load(name).records, load(name, fields=fields).records
        assert [(r.prompt, r.chosen, r.rejected) for r in mapped] == [
            (r.prompt, r.chosen, r.rejected) for r in built_in
        ]
    shp = {"prompt": "history", "chosen": "human_ref_{labels:B,A}", "rejected": "human_ref_{labels:A,B}"}
    built_in, mapped = load("shp.jsonl").records, load("shp.jsonl", fields=shp).records
    assert [(r.prompt, r.chosen, r.rejected) for r in mapped] == [
        (r.prompt, r.chosen, r.rejected) for r in built_in
    ]
    rankings = {  # a field of every item of a list; scores (higher better) in place of ranks
        "nectar.jsonl": {"prompt": "prompt", "completions": "answers[*].answer", "ranks": "answers[*].rank"},
        "ultrafeedback.jsonl": {
            "prompt": "instruction", "completions": "completions[*].response", "scores": "completions[*].overall_score",
        },
    }  # fmt: skip
    for name, fields in rankings.items():
        built_in, mapped = load(name).records, load(name, fields=fields).records
        assert load(name, fields=fields).format == "ranking"
        assert [(r.prompt, r.completions, r.pairs()) for r in mapped] == [
            (r.prompt, r.completions, r.pairs()) for r in built_in
        ]
    helpsteer = {"prompt": "prompt", "completion": "response", "rating": "correctness"}
    mapped = load("helpsteer2.jsonl", fields=helpsteer, rating_scale=[0, 4]).records
    assert [r.rating for r in mapped] == [
        r.rating for r in load("helpsteer2.jsonl", attribute="correctness").records
    ]
    fields = {
        "prompt": "info.post",
        "chosen": "summaries[choice].text",
        "rejected": "summaries[1-choice].text",
    }
    data = load("summarize_feedback_comparisons.jsonl", fields=fields, on_error="skip")
    assert data.format == "pairwise" and [r.chosen.strip()[:9] for r in data.records] == [
        "Moved to ",
        "Landlord ",
    ]
    assert sorted(data.records[0].meta) == ["batch", "extra", "split", "worker"]  # what no path read is kept
    (err,) = data.report.skipped  # the CNN/DM item has an `article`, not a `post`
    assert str(err).endswith(
        "summarize_feedback_comparisons.jsonl:3: field `prompt`: `data.fields` maps it from `info.post`: no field "
        "`post` (got an object with fields (article, id, site))"
    )
    with pytest.raises(DataError, match=r"field `data.fields`: `promt` is not a field any format reads"):
        load("shp.jsonl", fields={"promt": "history"})
    with pytest.raises(DataError, match=r"field `chosen`: `data.fields` maps it from `human_ref_\{labels:B\}`: "
                       r"field `labels` is 1, which picks none of \['B'\]"):  # fmt: skip
        load("shp.jsonl", fields={**shp, "chosen": "human_ref_{labels:B}"})
    with pytest.raises(DataError, match=r"maps it from `history\[\*\]`: `\[\*\]` needs a list, got a string"):
        load("shp.jsonl", fields={**shp, "prompt": "history[*]"})
