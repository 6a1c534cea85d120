"""`rlhf eval tasks`: a local lm-evaluation-harness task (multiple choice, 4 items, its data beside
it) run offline on the pretrained tiny Llama of ../shared and on an SFT adapter of it; the harness's
accuracy equals the one worked out from the model's own log-likelihoods, and two models make one
table with the difference to the first."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import write_mc_task
from rlhf.config.core import ConfigError
from rlhf.eval.tasks import local_task, resolve_model, side_by_side, table_text

RLHF = str(Path(sys.executable).with_name("rlhf"))
ITEMS = [
    ("Once upon a time there was a", ["little girl", "green table", "blue sky", "big dog"], 0),
    ("The cat sat on the", ["mat", "sun", "idea", "run"], 0),
    ("Lily wanted to play with her", ["friend", "toys", "car", "mom"], 1),
    ("He was very", ["happy", "table", "go", "the"], 0),
]


def write_task(folder: Path) -> Path:
    return write_mc_task(folder, "tiny_stories_mc", ITEMS)


def test_a_local_task_reads_its_data_from_its_own_folder(tmp_path):
    config = local_task(write_task(tmp_path / "tasks"))
    assert config["dataset_kwargs"]["data_files"] == {"test": str(tmp_path / "tasks" / "items.jsonl")}
    (tmp_path / "bad.yaml").write_text("dataset_path: json\n")
    with pytest.raises(ConfigError, match="names its task"):
        local_task(tmp_path / "bad.yaml")


def test_a_run_directory_stands_for_its_model(tmp_path):
    (tmp_path / "ppo" / "policy").mkdir(parents=True)
    (tmp_path / "ppo" / "config.json").write_text("{}")  # the run's own config, not a model's
    (tmp_path / "ppo" / "policy" / "model.safetensors").write_text("")
    assert resolve_model(str(tmp_path / "ppo")) == (str(tmp_path / "ppo" / "policy"), "ppo")
    assert resolve_model("org/model") == ("org/model", "model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no model"):
        resolve_model(str(tmp_path / "empty"))


def test_the_table_gives_each_model_its_difference_from_the_first():
    models = {"base": {"t": {"acc": {"value": 0.5, "stderr": 0.1}}},
              "ppo": {"t": {"acc": {"value": 0.75, "stderr": None}, "f1": {"value": 0.2, "stderr": None}}}}  # fmt: skip
    rows = side_by_side(models)
    assert rows[0]["difference"] == {"ppo": 0.25} and rows[1]["difference"] == {"ppo": None}
    text = table_text(rows, ["base", "ppo"]).splitlines()
    assert text[0].split() == ["task", "metric", "base", "ppo", "ppo", "-", "base"]
    assert text[1].split() == ["t", "acc", "0.500", "±", "0.100", "0.750", "+0.250"]
    assert text[2].split() == ["t", "f1", "-", "0.200", "-"]


def hand_accuracy(model_dir: Path) -> tuple[float, list[list[float]]]:
    """Each choice's log-likelihood after its question (the question, a space, the choice; the
    choice's tokens are those the whole text has beyond the question's), by a plain forward."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    correct, loglik = 0, []
    for question, choices, answer in ITEMS:
        scores = []
        for choice in choices:
            context = tokenizer(question).input_ids
            whole = tokenizer(question + " " + choice).input_ids
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=torch.tensor([whole])).logits[0].float(), -1)
            scores.append(sum(logp[t - 1, whole[t]].item() for t in range(len(context), len(whole))))
        loglik.append(scores)
        correct += max(range(len(choices)), key=scores.__getitem__) == answer
    return correct / len(ITEMS), loglik


@pytest.mark.slow
def test_eval_tasks_runs_a_local_task_offline_on_two_models(tmp_path, tinystories_path):
    from rlhf.config import load_config
    from rlhf.sft.config import SftConfig
    from rlhf.sft.train import run_sft

    task = write_task(tmp_path / "tasks")
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps({"prompt": q, "completion": " " + c[a]}) + "\n" for q, c, a in ITEMS))
    sft = tmp_path / "sft"
    run_sft(load_config(SftConfig, None, [
        f"model.path={tinystories_path}", f"data.path={data}", "peft.method=lora", "max_steps=2", "batch_size=4",
        "eval.fraction=0", "prompt.template=raw", f"output_dir={sft}", "logging.progress=false",
        "logging.tensorboard=false",
    ]))  # fmt: skip
    out = tmp_path / "out"
    proc = subprocess.run(
        [RLHF, "eval", "tasks", str(tinystories_path), str(sft), "--tasks", str(task), "--names", "base,sft",
         "--output-dir", str(out)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "tasks.json").read_text())
    (row,) = summary["rows"]
    accuracy, loglik = hand_accuracy(tinystories_path)
    assert accuracy == 0.75  # what the pretrained tiny Llama gets (the third item's answer is "toys")
    assert row["models"]["base"]["value"] == accuracy
    samples = [
        json.loads(line) for line in (out / "base" / "samples_tiny_stories_mc.jsonl").read_text().splitlines()
    ]
    for sample, mine in zip(sorted(samples, key=lambda s: s["doc_id"]), loglik):
        # The harness's batched forward against one forward per text: float32 sums of a 5-layer model
        # in another order, on log-likelihoods of a few nats: far below 1e-4.
        assert [r[0][0] for r in sample["resps"]] == pytest.approx(mine, abs=1e-4)
    assert row["difference"]["sft"] == pytest.approx(row["models"]["sft"]["value"] - accuracy)
    assert "tiny_stories_mc" in proc.stdout and "sft - base" in proc.stdout


@pytest.mark.slow  # reads the harness's whole task index (thousands of YAML files)
def test_an_unknown_task_name_is_one_line_with_the_close_ones():
    from rlhf.eval.tasks import task_specs

    with pytest.raises(
        ConfigError,
        match=r"task `hellaswa` is not in lm-evaluation-harness's registry; did you mean hellaswag",
    ):
        task_specs(["hellaswa"])
    assert task_specs(["hellaswag"]) == ["hellaswag"]


@pytest.mark.slow
def test_an_encoder_decoder_runs_through_the_harness_seq2seq_backend(tmp_path):
    from rlhf.config.core import load_config
    from rlhf.eval.config import EvalTasksConfig
    from rlhf.eval.tasks import run_eval_tasks
    from tiny_models import build_seq2seq

    t5 = build_seq2seq(tmp_path / "t5", "t5", init="peaked")
    task = write_task(tmp_path / "tasks")
    cfg = load_config(
        EvalTasksConfig, None, [f"models=[{t5}]", f"tasks=[{task}]", f"output_dir={tmp_path / 'out'}"]
    )
    (row,) = run_eval_tasks(cfg)["rows"]
    assert 0.0 <= row["models"]["t5"]["value"] <= 1.0
    samples = (tmp_path / "out" / "t5" / "samples_tiny_stories_mc.jsonl").read_text().splitlines()
    # Each of the 4 items asked for the log-likelihood of its 4 choices, each a finite sum of log-probs.
    resps = [[r[0][0] for r in json.loads(line)["resps"]] for line in samples]
    assert len(resps) == 4 and all(len(r) == 4 and all(v < 0 for v in r) for r in resps)
