"""The alignment tax: the held-out loss equals a plain forward's NLL of the answer tokens; the tax
table's gains and changes by hand; the pipeline measures it on SFT and every policy (held-out text
and a local lm-evaluation-harness task), and the report's "What alignment cost" opens in Chromium."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from helpers import open_report, statuses, write_mc_task
from helpers import pipeline_config as config
from rlhf.eval.tax import tax_rows, tax_table
from tolerance import LOGPROB, TINY_TERMS, reorder_tol

DEMOS = [{"prompt": "Name a color.", "completion": " Blue is a color."},
         {"prompt": "Say hi.", "completion": " Hi there, friend!"},
         {"prompt": "Count to three.", "completion": " One, two, three."}]  # fmt: skip


def test_the_held_out_loss_is_the_answer_tokens_nll_by_a_plain_forward(tmp_path):
    from rlhf.config.parts import ModelConfig, PromptConfig
    from rlhf.data import PromptRenderer, load_records
    from rlhf.data.examples import encode_demonstrations
    from rlhf.eval.lm_loss import lm_losses
    from rlhf.models import load_tokenizer, save_tiny

    model_dir = save_tiny(tmp_path / "m", seed=4)
    demos, text = tmp_path / "demos.jsonl", tmp_path / "text.jsonl"
    demos.write_text("".join(json.dumps(d) + "\n" for d in DEMOS))
    text.write_text(json.dumps({"text": "A plain sentence, scored on every token."}) + "\n")
    prompt = PromptConfig(template="raw")
    got = lm_losses(str(model_dir), [str(demos), str(text)], prompt=prompt, batch_size=2)

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tokenizer = load_tokenizer(ModelConfig(path=str(model_dir)))
    for path in (demos, text):
        records = load_records(str(path), expect="sft").demonstrations()
        examples, _ = encode_demonstrations(
            records, PromptRenderer(prompt, tokenizer), tokenizer, 512, None, True
        )
        nll, count = 0.0, 0
        for e in examples:
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=torch.tensor([e.input_ids])).logits[0].float(), -1)
            start = max(e.prompt_len, 1)  # plain text: every token after the first (nothing predicts it)
            nll -= sum(logp[t - 1, e.input_ids[t]].item() for t in range(start, len(e.input_ids)))
            count += len(e.input_ids) - start
        result = got[str(path)]
        assert result["tokens"] == count
        # Padded batches of 2 against one forward per record: the same float32 sums in another order,
        # on per-token NLLs of about log 512 nats.
        assert result["loss"] == pytest.approx(nll / count, abs=reorder_tol(LOGPROB, TINY_TERMS))


def test_the_tax_rows_by_hand():
    tax = {"policies": {
        "sft": {"lm_loss": {"/d/held.jsonl": {"loss": 2.0}}, "tasks": {"mc": {"acc": {"value": 0.5}}}},
        "ppo": {"lm_loss": {"/d/held.jsonl": {"loss": 2.5}}, "tasks": {"mc": {"acc": {"value": 0.25}}}},
        "dpo": {"lm_loss": {"/d/held.jsonl": {"loss": 2.1}}, "tasks": {}},
    }}  # fmt: skip
    comparison = {"policies": {"sft": {"scores": {"gold": {"mean": 1.0}, "reward": {"mean": -0.5}}},
                               "ppo": {"scores": {"gold": {"mean": 1.75}, "reward": {"mean": 1.5}}},
                               "dpo": {"scores": {"gold": {"mean": 1.25}}}}}  # fmt: skip
    rows = tax_rows(tax, comparison)
    assert rows == [
        {"method": "ppo", "gold_gain": 0.75, "reward_gain": 2.0, "changes": {"loss held.jsonl": 0.5, "mc acc": -0.25}},
        {"method": "dpo", "gold_gain": 0.25, "reward_gain": None, "changes": {"loss held.jsonl": pytest.approx(0.1)}},
    ]  # fmt: skip
    lines = tax_table(rows, {"ppo": "PPO", "dpo": "DPO"}).splitlines()
    assert lines[0].split() == [
        "method",
        "gold",
        "gain",
        "reward",
        "gain",
        "Δ",
        "loss",
        "held.jsonl",
        "Δ",
        "mc",
        "acc",
    ]
    assert lines[1].split() == ["PPO", "+0.750", "+2.000", "+0.500", "-0.250"]
    assert lines[2].split() == ["DPO", "+0.250", "-", "+0.100", "-"]


@pytest.mark.slow
def test_the_pipeline_measures_what_alignment_cost(tmp_path, browser):
    folder = tmp_path / "tax"
    folder.mkdir()
    (folder / "held.jsonl").write_text("".join(json.dumps(d) + "\n" for d in DEMOS))
    (folder / "documents.jsonl").write_text(json.dumps({"text": "Some plain text no stage saw."}) + "\n")
    write_mc_task(
        folder, "tiny_mc", [(f"Item {i}:", ["yes", "no", "maybe", "never"], i % 4) for i in range(4)]
    )
    texts = f"tax.texts=[{folder / 'held.jsonl'}, {folder / 'documents.jsonl'}]"
    cfg = config(
        tmp_path, "methods=[ppo, best_of_n]", "best_of_n.n=2", texts, f"tax.tasks=[{folder / 'task.yaml'}]"
    )
    from rlhf.pipeline.run import run_pipeline

    summary = run_pipeline(cfg, log=lambda _: None)
    run = Path(cfg.output_dir)
    tax = json.loads((run / "eval" / "tax.json").read_text())
    assert list(tax["policies"]) == ["sft", "ppo", "best_of_n"]
    sft, ppo, best = (tax["policies"][n] for n in ("sft", "ppo", "best_of_n"))
    held = str(folder / "held.jsonl")
    assert sft["lm_loss"][held]["tokens"] > 0 and set(sft["tasks"]["tiny_mc"]) == {"acc"}
    assert best == {**sft, "path": best["path"]}  # best-of-N's policy is the SFT model: measured once
    rows = {r["method"]: r for r in tax["rows"]}
    assert rows["ppo"]["changes"]["loss held.jsonl"] == pytest.approx(
        ppo["lm_loss"][held]["loss"] - sft["lm_loss"][held]["loss"]
    )
    assert rows["best_of_n"]["changes"] == {
        "loss held.jsonl": 0.0,
        "loss documents.jsonl": 0.0,
        "tiny_mc acc": 0.0,
    }
    assert summary["headline"]["alignment_tax"] == tax["rows"]
    # ROUGE against the held-out demonstrations: in the headline (summary.json) as in eval.json.
    result = json.loads((run / "eval" / "eval.json").read_text())
    rouge = summary["headline"]["metrics"]["rouge1"]
    assert rouge["policy"] == result["policy_metrics"]["rouge1"]["mean"]
    assert rouge["difference"] == result["metric_differences"]["rouge1"]["mean"]

    page, seen = open_report(browser, run / "report.html")
    section = page.locator("#tax")
    assert "What alignment cost" in section.inner_text()
    assert section.locator("table tr").count() == 3  # the header, PPO, best-of-N
    assert "Δ loss held.jsonl" in section.inner_text() and not seen["errors"]
    # The held-out prompts are demonstrations: ROUGE against them, in the evaluation section.
    evaluation = page.locator("#evaluation").inner_text()
    assert "Metrics (mean ± standard error)" in evaluation and "rouge1" in evaluation
    # A changed tax setting reruns only the evaluation and the report.
    again = config(tmp_path, "methods=[ppo, best_of_n]", "best_of_n.n=2", texts)
    ran = [s for s, v in statuses(run_pipeline(again, log=lambda _: None)).items() if v == "ran"]
    assert ran == ["eval", "report"]
    # Without a tax setting, the earlier measurement is gone (not shown as this run's).
    untaxed = run_pipeline(config(tmp_path, "methods=[ppo, best_of_n]", "best_of_n.n=2"), log=lambda _: None)
    assert not (run / "eval" / "tax.json").exists() and "alignment_tax" not in untaxed["headline"]
