"""Over-optimization flagged where it happens and only there: the reward model's win rate against an
independent judge's (gap), and an independent monitor that peaks and falls while PPO's reward rises
(turn). A real policy fine-tuned to write `e`s is evaluated twice: with a gold rule that likes `e`s
as the reward does (no line), and with one that does not (the line, with the numbers)."""

from __future__ import annotations

import dataclasses
import io
import json
from contextlib import redirect_stdout

import pytest

from rlhf.training.overoptimization import gap_line, reward_gap, turn, turn_line

GOLD = """
def likes_e(prompts, completions):
    return [sum(ch == "e" for ch in c) / max(1, len(c)) for c in completions]

def dislikes_e(prompts, completions):
    return [-sum(ch == "e" for ch in c) / max(1, len(c)) for c in completions]

def scramble(prompts, completions):
    # an arbitrary rule that any change of the answers moves (PPO does not see it)
    return [sum(ord(ch) * 31 % 17 for ch in c) / (17 * max(1, len(c))) for c in completions]
"""


def test_the_gap_by_hand():
    rates = {"reward": {"rate": 0.833}, "gold": {"rate": 0.578}, "judge": {"rate": 0.9}}
    entry = reward_gap(rates, 0.1)
    assert entry["by"] == "gold" and entry["gap"] == pytest.approx(0.255, abs=1e-12) and entry["flagged"]
    assert gap_line(entry).startswith(
        "over-optimization: the policy wins 0.833 by the reward model but 0.578 by gold"
    )
    assert not reward_gap({"reward": {"rate": 0.62}, "gold": {"rate": 0.6}}, 0.1)["flagged"]
    assert gap_line(reward_gap({"reward": {"rate": 0.62}, "gold": {"rate": 0.6}})) is None
    assert reward_gap({"reward": {"rate": 0.9}}) is None  # nothing independent to compare with
    assert reward_gap({"reward": {"rate": 0.9}, "judge": {"rate": 0.7}})["by"] == "judge"


def test_a_turn_is_a_peak_then_a_fall_beyond_noise_while_the_reward_rises():
    steps = list(range(1, 21))
    reward = [0.1 * s for s in steps]
    wobble = [0.02 * (-1) ** s for s in steps]
    peaked = [min(s, 21 - s) * 0.1 + w for s, w in zip(steps, wobble)]  # up to step 10, then down
    entry = turn(steps, reward, peaked)
    assert entry["flagged"] and entry["best_steps"][0] <= 10 <= entry["best_steps"][1] + 2
    assert entry["last"] < entry["best"] - 2 * entry["stderr"]
    assert "gold of the training samples peaked" in turn_line(entry)
    rising = [0.1 * s + w for s, w in zip(steps, wobble)]
    assert not turn(steps, reward, rising)["flagged"]  # gold follows the reward: nothing to say
    noisy = [0.5 + (0.3 if s % 3 == 0 else -0.1) for s in steps]
    assert not turn(steps, reward, noisy)["flagged"]  # ups and downs within the noise
    assert not turn(steps, [1.0] * 20, peaked)["flagged"]  # the reward fell too: not over-optimization
    assert turn(steps[:5], reward[:5], peaked[:5]) is None  # too short to tell


def test_ppo_summary_reads_the_turn_of_its_monitors():
    from rlhf.config.core import load_config
    from rlhf.ppo.config import PpoConfig
    from rlhf.ppo.train import _turns

    cfg = load_config(
        PpoConfig, None, ["reward.sources=[{function: m:r}, {function: m:g, weight: 0, name: gold}]"]
    )
    history = [{"step": s, "reward/raw": 0.1 * s, "reward/gold": min(s, 21 - s) * 0.1} for s in range(1, 21)]
    (entry,) = _turns(cfg, history)
    assert entry["score"] == "gold" and entry["flagged"]


@pytest.mark.slow
def test_eval_policy_says_over_optimization_only_where_gold_disagrees(tmp_path):
    from rlhf.config.core import from_dict, load_config
    from rlhf.eval.config import EvalPolicyConfig
    from rlhf.eval.policy import run_eval_policy
    from rlhf.sft.config import SftConfig
    from rlhf.sft.train import run_sft

    (tmp_path / "gold.py").write_text(GOLD)
    data = tmp_path / "e.jsonl"
    prompts = [f"Say something {i}:" for i in range(24)]
    data.write_text("".join(json.dumps({"prompt": p, "completion": " eee eee eee"}) + "\n" for p in prompts))
    with redirect_stdout(io.StringIO()):
        run_sft(load_config(SftConfig, None, [
            "model.path=builtin:tiny", f"data.path={data}", "max_steps=25", "batch_size=8", "optimizer.lr=3e-3",
            "eval.fraction=0", f"output_dir={tmp_path / 'sft'}", "logging.progress=false",
            "logging.tensorboard=false",
        ]))  # fmt: skip
    lines = {}
    for rule in ("likes_e", "dislikes_e"):
        cfg = from_dict(EvalPolicyConfig, {
            "model": {"path": str(tmp_path / "sft" / "model")}, "baseline": "builtin:tiny", "data": {"path": str(data)},
            "reward": {"function": f"{tmp_path / 'gold.py'}:likes_e"}, "gold": f"{tmp_path / 'gold.py'}:{rule}",
            "sampling": {"temperature": 0, "max_new_tokens": 8}, "output_dir": str(tmp_path / rule), "progress": False,
        })  # fmt: skip
        out = io.StringIO()
        with redirect_stdout(out):
            result = run_eval_policy(cfg)
        lines[rule] = [line for line in out.getvalue().splitlines() if line.startswith("over-optimization")]
        saved = json.loads((tmp_path / rule / "eval.json").read_text())
        assert saved["overoptimization"] == result["overoptimization"]
    assert result["win_rate"]["reward"]["rate"] > 0.9  # the fine-tuned policy writes `e`s
    assert lines["likes_e"] == []  # gold agrees with the reward
    (line,) = lines["dislikes_e"]
    w = result["win_rate"]
    assert f"wins {w['reward']['rate']:.3f} by the reward model but {w['gold']['rate']:.3f} by gold" in line


def test_the_pipelines_headline_and_report_carry_the_lines(tmp_path):
    from rlhf.report.headline import headline, headline_table

    def run_dir(name: str, reward_rate: float, turn_flagged: bool):
        run = tmp_path / name
        (run / "eval").mkdir(parents=True)
        (run / "ppo").mkdir()
        rates = {"reward": {"ppo": {"sft": {"rate": reward_rate}}}, "gold": {"ppo": {"sft": {"rate": 0.55}}}}
        (run / "eval" / "comparison.json").write_text(json.dumps({"methods": ["ppo"], "win_rates": rates}))
        history_gold = [min(s, 21 - s) * 0.1 if turn_flagged else 0.1 * s for s in range(1, 21)]
        entry = turn(list(range(1, 21)), [0.1 * s for s in range(1, 21)], history_gold)
        (run / "ppo" / "summary.json").write_text(json.dumps({"overoptimization": [entry]}))
        return run

    head = headline(run_dir("bad", 0.9, True))
    assert [f["kind"] for f in head["overoptimization"]] == ["gap", "turn"]
    text = headline_table(head)
    assert "PPO: over-optimization: the policy wins 0.900 by the reward model but 0.550 by gold" in text
    assert "PPO training: over-optimization: gold of the training samples peaked" in text
    assert "overoptimization" not in headline(run_dir("good", 0.6, False))


@pytest.mark.slow
@pytest.mark.parametrize("select", ["best_heldout", "last"])
def test_ppo_keeps_the_policy_of_its_best_held_out_step(tmp_path, select):
    """PPO climbs `e`s while an independent rule it never sees scores the held-out answers: the kept
    policy is the step whose held-out score was best (re-measured on the saved policy: the same
    answers, the same score)."""
    from helpers import DEMOS
    from rlhf.config.core import load_config
    from rlhf.generation.sampling import sample_sequences
    from rlhf.models.load import load_lm, load_tokenizer
    from rlhf.ppo.config import PpoConfig
    from rlhf.ppo.train import load_prompt_ids, run_ppo

    gold = tmp_path / "overopt_rules.py"
    gold.write_text(GOLD)
    sources = f"reward.sources=[{{function: '{gold}:likes_e'}}, {{function: '{gold}:scramble', weight: 0, name: gold}}]"
    cfg = load_config(PpoConfig, None, [
        "model.path=builtin:tiny", "peft.method=none", f"data.path={DEMOS}", "max_steps=8", "rollout.prompts_per_step=4",
        "rollout.samples_per_prompt=2", "minibatch_size=8", "rollout.sampling.max_new_tokens=8", "optimizer.lr=1e-3",
        sources, f"heldout.path={DEMOS}", "heldout.every=2", "heldout.limit=6", f"select={select}",
        f"output_dir={tmp_path / 'ppo'}", "logging.progress=false", "logging.tensorboard=false",
    ])  # fmt: skip
    out = io.StringIO()
    with redirect_stdout(out):
        summary = run_ppo(cfg).summary
    logged = [json.loads(line) for line in (tmp_path / "ppo" / "metrics.jsonl").read_text().splitlines()]
    held = {r["step"]: r["ppo/heldout/gold"] for r in logged if "ppo/heldout/gold" in r}
    assert sorted(held) == [2, 4, 6, 8]
    best = max(held, key=lambda s: (held[s], -s))
    assert len(set(held.values())) > 1  # the answers moved between evaluations
    assert select == "last" or held[best] != held[8]  # the kept policy is not the last one
    chosen = summary["selected"]
    assert chosen["best_step"] == best and chosen["last_step"] == 8
    assert chosen["kept_step"] == (best if select == "best_heldout" else 8)
    # The saved policy answers the held-out prompts as the kept step's policy did.
    policy_cfg = dataclasses.replace(cfg.model, path=summary["policy_dir"])
    tokenizer = load_tokenizer(policy_cfg, padding_side="left")
    model = load_lm(policy_cfg, for_training=False, tokenizer=tokenizer)
    prompts, ids, _, _ = load_prompt_ids(
        dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, limit=6)), tokenizer
    )
    greedy = dataclasses.replace(cfg.rollout.sampling, temperature=0.0, seed=cfg.seed)
    texts = [s.text for s in sample_sequences(model, tokenizer, ids, greedy, progress=False)]
    exec_globals: dict = {}
    exec(GOLD, exec_globals)
    again = sum(exec_globals["scramble"](prompts, texts)) / len(texts)
    # Same answers and scores, summed here in float64 in another order than the run's: ~1e-16 apart.
    assert again == pytest.approx(held[chosen["kept_step"]], abs=1e-12)  # same answers: the same mean
    if select == "best_heldout":
        assert f"kept the policy of step {best}" in out.getvalue()
