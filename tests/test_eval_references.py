"""Reference metrics (ROUGE-1/2/L, exact match) against hand-counted n-grams, where references come
from, the paired difference of two policies; `rlhf eval policy` with references and a classifier
metric, whose every value equals a plain forward pass of the classifier."""

from __future__ import annotations

import json

import pytest
import torch

from rlhf.data.errors import DataError
from rlhf.eval.metrics import paired_difference
from rlhf.eval.references import reference_scores, references_of
from tiny_models import ENCODERS, LABELS, build_classifier


def test_rouge_and_exact_match_equal_hand_counted_ngrams():
    answers = [
        "the cat sat on the mat",
        "Dogs are running",
        "  Hello   world ",
        "hello world",
        "red green blue",
    ]
    refs = [["the cat sat on a mat"], ["the dog runs"], ["Hello world"], ["Hello world"],
            ["x y z", "red green yellow"]]  # fmt: skip
    got = reference_scores(answers, refs)
    # 1: unigrams in common (`the` counted once: the reference has one) 5 of 6 each side -> F1 5/6;
    #    bigrams the-cat, cat-sat, sat-on of 5 -> 3/5; longest common subsequence "the cat sat on mat" 5.
    # 2: stems dog, are, run against the, dog, run: 2 of 3 each side; no bigram in common; LCS dog run.
    # 3: the same words after whitespace is collapsed: all 1, exact match. 4: ROUGE lowercases, exact
    #    match does not. 5: two references, the better one counts (red green: 2 of 3 words, 1 of 2 bigrams).
    assert got["rouge1"] == pytest.approx([5 / 6, 2 / 3, 1, 1, 2 / 3], abs=1e-12)
    assert got["rouge2"] == pytest.approx([3 / 5, 0, 1, 1, 1 / 2], abs=1e-12)
    assert got["rougeL"] == pytest.approx([5 / 6, 2 / 3, 1, 1, 2 / 3], abs=1e-12)
    assert got["exact_match"] == [0.0, 0.0, 1.0, 0.0, 0.0]
    assert reference_scores(["x"], [None]) == {"rouge1": [None], "rouge2": [None], "rougeL": [None],
                                               "exact_match": [None]}  # fmt: skip


def test_paired_difference_by_hand():
    # Differences 1, 2, 3: mean 2, sample sd 1, standard error 1/sqrt 3.
    d = paired_difference([1.0, 2.0, 4.0], [0.0, 0.0, 1.0])
    assert (d.mean, d.n) == (2.0, 3) and d.stderr == pytest.approx(3**-0.5, rel=1e-12)
    assert (d.low, d.high) == pytest.approx((2 - 1.959963984540054 / 3**0.5, 2 + 1.959963984540054 / 3**0.5))
    assert paired_difference([1.0], [0.5]).low is None
    with pytest.raises(ValueError, match="one each per prompt"):
        paired_difference([1.0], [])


def test_metric_names_are_their_own():
    from rlhf.config import load_config
    from rlhf.config.core import ConfigError
    from rlhf.eval.config import EvalPolicyConfig

    cfg = load_config(EvalPolicyConfig, None, ["metrics=[{model: m, label: toxic, output: probability}]"])
    assert [m.label for m in cfg.metrics] == ["toxic"]
    for metrics in ("[{function: a:f}, {function: a:f, weight: 2}]", "[{function: a:f, name: rouge1}]"):
        with pytest.raises(ConfigError, match="`metrics` need names of their own"):
            load_config(EvalPolicyConfig, None, [f"metrics={metrics}"])


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_references_come_from_the_rows_a_field_or_a_file(tmp_path):
    from rlhf.data import load_records

    def refs(rows, **kw):
        return references_of(load_records(write(tmp_path / "d.jsonl", rows)).records, **kw)

    assert refs([{"prompt": "a", "completion": "A"}]) == [["A"]]
    assert refs([{"prompt": "a", "chosen": "A", "rejected": "B"}]) == [["A"]]
    ranked = [{"prompt": "a", "completions": ["x", "y", "z"], "ranks": [1, 0, 0]}]
    assert refs(ranked) == [["y", "z"]]  # the best rank; ties are all references
    assert refs([{"prompt": "a", "reference": ["A", "B"]}, {"prompt": "b"}]) == [["A", "B"], None]
    assert refs([{"prompt": "a", "summary": "S"}], field="summary") == [["S"]]
    with pytest.raises(DataError, match=r"d.jsonl:2: field `summary`: missing"):
        refs([{"prompt": "a", "summary": "S"}, {"prompt": "b"}], field="summary")
    with pytest.raises(DataError, match="field `reference`: a reference must be a text"):
        refs([{"prompt": "a", "reference": 3}])

    held_out = load_records(write(tmp_path / "p.jsonl", [{"prompt": "a"}, {"prompt": "b"}])).records
    file = write(tmp_path / "r.jsonl", [{"prompt": "b", "completion": "B"}, {"prompt": "a", "completion": "A"},
                                        {"prompt": "a", "completion": "A2"}])  # fmt: skip
    assert references_of(held_out, path=file) == [["A", "A2"], ["B"]]
    with pytest.raises(DataError, match=r"p.jsonl:2: field `prompt`: no reference for this prompt in"):
        references_of(held_out, path=write(tmp_path / "r.jsonl", [{"prompt": "a", "completion": "A"}]))


@pytest.mark.slow
def test_eval_policy_reports_rouge_and_a_classifier_metric(tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rlhf.config import load_config
    from rlhf.eval.config import EvalPolicyConfig
    from rlhf.eval.policy import run_eval_policy
    from rlhf.models import save_tiny

    data = write(tmp_path / "held_out.jsonl", [
        {"prompt": f"Tell me about {w}.", "completion": f"{w} are nice and {w} are good"}
        for w in ["cats", "rain", "bread", "ships", "tea", "snow"]
    ])  # fmt: skip
    policy, baseline = save_tiny(tmp_path / "p", seed=1), save_tiny(tmp_path / "b", seed=2)
    classifier = build_classifier(tmp_path / "clf", *ENCODERS["roberta"])
    cfg = load_config(EvalPolicyConfig, None, [
        f"model.path={policy}", f"baseline={baseline}", f"data.path={data}", "prompt.template=raw",
        "sampling.max_new_tokens=12", f"output_dir={tmp_path / 'out'}", "progress=false",
        f"metrics=[{{model: {classifier}, label: nothate, output: probability}}]",
    ])  # fmt: skip
    result = run_eval_policy(cfg)
    rows = [json.loads(line) for line in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]

    tokenizer = AutoTokenizer.from_pretrained(classifier)
    model = AutoModelForSequenceClassification.from_pretrained(classifier).eval()
    nothate = [k for k, v in LABELS.items() if v == "nothate"][0]
    for row in rows:
        for name in ("policy", "baseline"):
            metrics = row[name + "_metrics"]
            want = reference_scores([row[name]], [row["references"]])
            assert {k: metrics[k] for k in want} == {k: v[0] for k, v in want.items()}
            with torch.no_grad():
                logits = model(**tokenizer(row[name], return_tensors="pt")).logits[0]
            # The classifier on a padded batch against this single forward: the same float32 sums in
            # another order on a probability (<= 1) through 2 layers of width 32-64: far below 1e-5.
            assert metrics["nothate probability"] == pytest.approx(
                logits.softmax(-1)[nothate].item(), abs=1e-5
            )
    for metric in ("rouge1", "rouge2", "rougeL", "exact_match", "nothate probability"):
        mine = [r["policy_metrics"][metric] for r in rows]
        theirs = [r["baseline_metrics"][metric] for r in rows]
        assert result["policy_metrics"][metric]["mean"] == pytest.approx(sum(mine) / 6)
        diff = result["metric_differences"][metric]
        assert diff["mean"] == pytest.approx((sum(mine) - sum(theirs)) / 6)
        assert diff["n"] == 6 and diff["low"] <= diff["mean"] <= diff["high"]
