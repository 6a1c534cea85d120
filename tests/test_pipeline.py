"""`rlhf pipeline`: every stage in one run directory, finished stages skipped, stages alone, outside inputs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import pipeline_config as config
from helpers import statuses
from rlhf.config.core import ConfigError, load_config
from rlhf.pipeline.config import PipelineConfig
from rlhf.pipeline.run import run_pipeline

RLHF = str(Path(sys.executable).with_name("rlhf"))
DEMOS = str(Path(__file__).parents[1] / "src" / "rlhf" / "assets" / "demo" / "demonstrations.jsonl")


@pytest.mark.slow
def test_every_stage_runs_then_finished_stages_are_skipped(tmp_path):
    cfg = config(tmp_path)
    run = Path(cfg.output_dir)
    first = run_pipeline(cfg, log=lambda _: None)
    assert set(statuses(first).values()) == {"ran"}
    for path in ("sft/model/model.safetensors", "generate/candidates.jsonl", "feedback/pairs.jsonl",
                 "feedback/heldout_gold.jsonl", "reward/model/model.safetensors", "reward_eval/eval.json",
                 "ppo/policy/model.safetensors", "ppo/metrics.jsonl", "eval/eval.json", "report.html", "config.yaml"):  # fmt: skip
        assert (run / path).is_file(), path
    head = json.loads((run / "summary.json").read_text())["headline"]
    assert {"gold_sft", "gold_policy", "win_rate_gold", "kl", "reward_model_accuracy"} <= set(head)
    assert "labeler_raw_agreement" in head
    # PPO logged the gold score (a weight-0 source) next to the reward model's.
    ppo_rows = [json.loads(line) for line in (run / "ppo" / "metrics.jsonl").read_text().splitlines()]
    assert any("ppo/reward/gold" in r for r in ppo_rows)
    assert "Gold score" in (run / "report.html").read_text() or "gold" in (run / "report.html").read_text()

    # Nothing changed: every stage is skipped, the outputs were checked.
    again = run_pipeline(cfg, log=lambda _: None)
    assert set(statuses(again).values()) == {"skipped (finished)"}

    # A folder without its weights is not finished: PPO runs again, and the stages reading it follow.
    (run / "ppo" / "policy" / "model.safetensors").unlink()
    repaired = statuses(run_pipeline(cfg, log=lambda _: None))
    assert [s for s, v in repaired.items() if v == "ran"] == ["ppo", "eval", "report"]

    # A changed setting reruns that stage and what reads it, nothing before.
    changed = config(tmp_path, "eval.data.limit=5")
    after = statuses(run_pipeline(changed, log=lambda _: None))
    assert [s for s, v in after.items() if v == "ran"] == ["eval", "report"]
    assert json.loads((run / "eval" / "eval.json").read_text())["prompts"] == 5

    # `rerun` forces a finished stage; its readers follow because its outputs are new.
    forced = statuses(
        run_pipeline(config(tmp_path, "eval.data.limit=5", "rerun=[reward]"), log=lambda _: None)
    )
    assert [s for s, v in forced.items() if v == "ran"] == ["reward", "ppo", "eval", "report"]


@pytest.mark.slow
def test_a_stage_alone_needs_its_inputs_and_outside_inputs_replace_stages(tmp_path):
    with pytest.raises(
        ConfigError,
        match=r"stage `reward` needs the outputs of stage `sft` in .*run/sft, which are not there",
    ):
        run_pipeline(config(tmp_path, "stages=[reward]"), log=lambda _: None)

    # People's preferences from a file (as `rlhf label export` writes them) and an existing SFT model.
    rows = [
        {"prompt": f"Question {i}?", "chosen": "A full and kind answer.", "rejected": "No.", "weight": 1.0}
        for i in range(12)
    ]
    export = tmp_path / "export.jsonl"
    export.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = config(
        tmp_path, "sft_model=builtin:tiny", "feedback.source=file", f"feedback.path={export}",
        "stages=[feedback, reward]",
    )  # fmt: skip
    summary = run_pipeline(cfg, log=lambda _: None)
    assert statuses(summary) == {
        "sft": "input", "generate": "input", "feedback": "ran", "reward": "ran",
        "ppo": "not run", "eval": "not run", "report": "not run",
    }  # fmt: skip
    fb = json.loads((Path(cfg.output_dir) / "feedback" / "feedback.json").read_text())
    assert fb["source"] == "file" and fb["train_rows"] + fb["heldout_rows"] == 12
    assert (Path(cfg.output_dir) / "reward" / "model" / "model.safetensors").is_file()


@pytest.mark.slow
def test_cli_errors_are_one_line(tmp_path):
    proc = subprocess.run(
        [RLHF, "pipeline", "--set", f"output_dir={tmp_path}/r", "sft.data.path=x.jsonl", "stages=[sft, warmup]"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: `stages`: unknown stage 'warmup'; stages are sft, generate, feedback, reward, ppo, dpo, rrhf, best_of_n, rejection_sampling, eval, report"
    ]
    proc = subprocess.run(
        [RLHF, "pipeline", "--set", f"output_dir={tmp_path}/r"], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "error: `feedback.source: simulate` needs `gold" in proc.stderr


@pytest.mark.slow
def test_the_repo_config_runs_on_a_real_pretrained_model(tmp_path, tinystories_path):
    """examples/pipeline_tinystories.yaml, cut to a few steps, on TinyStories-260K given by path."""
    from rlhf.demo import DemoConfig, write_task_data

    data = write_task_data(load_config(DemoConfig, None, ["task.sft_examples=40"]).task, tmp_path / "data")
    example = Path(__file__).parents[1] / "examples" / "pipeline_tinystories.yaml"
    short = [
        f"output_dir={tmp_path / 'run'}", f"sft.model.path={tinystories_path}", f"sft.data.path={data['sft']}",
        "sft.max_steps=3", "sft.eval.every=0", "sft.logging.progress=false",
        f"generate.data.path={data['candidates']}", "generate.data.limit=8", "generate.progress=false",
        "reward.max_steps=3", "reward.eval.every=0", "reward.logging.progress=false",
        f"ppo.data.path={data['ppo']}", "ppo.max_steps=2", "ppo.logging.progress=false",
        f"eval.data.path={data['eval']}", "eval.data.limit=6", "eval.progress=false",
    ]  # fmt: skip
    cfg = load_config(PipelineConfig, example, short)
    summary = run_pipeline(cfg, log=lambda _: None)
    assert set(statuses(summary).values()) == {"ran"}
    sft = json.loads((tmp_path / "run" / "sft" / "model" / "config.json").read_text())
    assert sft["num_hidden_layers"] == 5 and sft["vocab_size"] == 512  # TinyStories-260K, fine-tuned
    assert {"gold_sft", "gold_policy", "win_rate_gold", "kl"} <= set(summary["headline"])


def test_reward_stage_wiring_without_held_out_pairs(tmp_path):
    """When no held-out pair survived (a held-out prompt's candidates all alike), reward trains without an
    eval split instead of failing on an empty file; with held-out pairs it evaluates on them."""
    from rlhf.pipeline.layout import Paths
    from rlhf.pipeline.wiring import reward_config

    cfg = config(tmp_path)
    paths = Paths(Path(cfg.output_dir), cfg)
    feedback = paths.stage("feedback")
    feedback.mkdir(parents=True)
    (feedback / "heldout.jsonl").write_text("")
    wired = reward_config(paths)
    assert wired.eval.path is None and wired.data.path == str(feedback / "pairs.jsonl")
    assert wired.model.path == str(Path(cfg.output_dir) / "sft" / "model")
    (feedback / "heldout.jsonl").write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n')
    assert reward_config(paths).eval.path == str(feedback / "heldout.jsonl")


def test_the_pipelines_engine_reaches_every_stage_that_samples(tmp_path):
    """`engine`/`vllm` at the pipeline's top go to generate, PPO's rollouts, rejection sampling and
    every evaluation; unset, each stage keeps its own."""
    import dataclasses

    from rlhf.config.engine import VllmConfig
    from rlhf.pipeline.layout import Paths
    from rlhf.pipeline.wiring import eval_config, generate_config, ppo_config, rejection_generate_config

    cfg = config(tmp_path)
    paths = Paths(Path(cfg.output_dir), cfg)
    assert generate_config(paths).engine == "hf" and ppo_config(paths).rollout.engine == "hf"
    vllm = VllmConfig(kv_cache_gib=2, lora_sync="adapter")
    cfg = dataclasses.replace(cfg, engine="vllm", vllm=vllm, methods=["ppo", "best_of_n"])
    paths = Paths(Path(cfg.output_dir), cfg)
    ppo = ppo_config(paths)
    assert (ppo.rollout.engine, ppo.rollout.vllm) == ("vllm", vllm)
    for section in (generate_config(paths), rejection_generate_config(paths), eval_config(paths, "ppo"),
                    eval_config(paths, "best_of_n")):  # fmt: skip
        assert (section.engine, section.vllm) == ("vllm", vllm)
