"""`rlhf ppo` runs that must learn, and the invariants of its memory layout.

Rule rewards (`examples/rewards.py`) stand in for a learned reward: their optimum is reachable
by a tiny model, so the mean reward must climb within a small budget while the KL to the
reference stays finite and reported.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from rlhf.config.core import ConfigError, from_dict, merge
from rlhf.ppo import PpoConfig, run_ppo
from tolerance import LOGPROB, TINY_TERMS, reorder_tol

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = str(ROOT / "src/rlhf/assets/demo/demonstrations.jsonl")
LETTER_E = f"{ROOT / 'examples/rewards.py'}:letter_e"


def config(tmp_path: Path, **overrides) -> PpoConfig:
    base = {
        "model": {"path": "builtin:tiny"},
        "peft": {"method": "none"},
        "data": {"path": PROMPTS, "max_length": 64},
        "reward": {"function": LETTER_E},
        "rollout": {"prompts_per_step": 4, "samples_per_prompt": 2, "sampling": {"max_new_tokens": 8}},
        "minibatch_size": 8,
        "ppo_epochs": 4,
        "max_steps": 20,
        "optimizer": {"lr": 1e-3},
        "samples_every": 5,
        "output_dir": str(tmp_path / "run"),
        "logging": {"progress": False, "tensorboard": False},
    }
    return from_dict(PpoConfig, merge(base, overrides))


def climbs(rewards: list[float], by: float) -> bool:
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    return last > first + by


@pytest.mark.slow
def test_ppo_with_a_critic_climbs_a_rule_reward_and_logs_every_signal(tmp_path):
    result = run_ppo(config(tmp_path))
    summary = result.summary
    assert climbs(summary["reward"], 0.5), summary["reward"]
    assert all(math.isfinite(k) for k in summary["kl"]) and max(summary["kl"]) > 0
    run = tmp_path / "run"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "ppo/reward/raw" in r]
    assert [r["step"] for r in steps] == list(range(1, 21))
    expected = {
        "reward/raw", "reward/normalized", "reward/length", "kl", "beta", "entropy", "response_length",
        "clip_frac", "approx_kl", "policy_loss", "value_loss", "explained_variance", "time_generate",
        "time_update", "tokens_per_second", "grad_norm", "value_grad_norm",
    }  # fmt: skip
    assert expected <= {k.removeprefix("ppo/") for k in steps[-1]}
    tables = [r for r in rows if "ppo/samples" in r]
    assert [r["step"] for r in tables] == [1, 5, 10, 15, 20]
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert {"prompt", "completion", "reward", "reward/length"} <= set(samples[0])
    assert (run / "policy" / "config.json").is_file() and (
        run / "critic" / "rlhf_value_head.safetensors"
    ).is_file()


@pytest.mark.slow
@pytest.mark.parametrize("estimator", ["reinforce", "rloo", "grpo"])
def test_critic_free_estimators_climb_too(tmp_path, estimator):
    cfg = config(
        tmp_path, advantage={"estimator": estimator}, optimizer={"lr": 3e-3},
        rollout={"prompts_per_step": 4, "samples_per_prompt": 4},
    )  # fmt: skip
    summary = run_ppo(cfg).summary
    assert climbs(summary["reward"], 0.5), summary["reward"]
    assert summary["value_loss"] == [None] * 20  # no critic at all
    assert not (tmp_path / "run" / "critic").exists()


def _snapshot(policy) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in policy.named_parameters()}


def run_capturing(cfg: PpoConfig, monkeypatch) -> dict:
    """Run `cfg`, keeping the policy's parameters right after building and at the end of training,
    and the reference's logits (adapter off) on a fixed input at the end."""
    from rlhf.models.adapters import adapters_disabled
    from rlhf.ppo import setup, train

    captured = {"ids": torch.tensor([[5, 6, 7, 8, 9]])}
    build, finish = setup.build_models, train._finish

    def build_and_snapshot(*args, **kwargs):
        built = build(*args, **kwargs)
        captured["before"] = _snapshot(built.policy)
        return built

    def snapshot_and_finish(run, *args, **kwargs):
        cfg_, policy = run.cfg, run.policy
        captured["after"] = _snapshot(policy)
        captured["frozen_4bit"] = {
            name
            for name, p in policy.named_parameters()
            if type(p).__name__ == "Params4bit" and not p.requires_grad
        }
        if cfg_.peft.method != "none":
            with torch.no_grad(), adapters_disabled(policy.lm):
                captured["reference"] = policy.lm(input_ids=captured["ids"]).logits
        return finish(run, *args, **kwargs)

    monkeypatch.setattr(setup, "build_models", build_and_snapshot)
    monkeypatch.setattr(train, "_finish", snapshot_and_finish)
    captured["summary"] = run_ppo(cfg).summary
    before, after = captured["before"], captured["after"]
    assert set(after) == set(before)
    captured["changed"] = {name for name in before if not torch.equal(before[name], after[name])}
    return captured


@pytest.mark.slow
def test_lora_trains_only_the_adapter_and_value_head_and_the_reference_stays_the_base(tmp_path, monkeypatch):
    from rlhf.models import load_lm, load_tokenizer

    cfg = config(tmp_path, peft={"method": "lora"}, max_steps=3, optimizer={"lr": 1e-2})
    captured = run_capturing(cfg, monkeypatch)
    changed = captured["changed"]
    assert all("lora_" in name or name.startswith("value_head") for name in changed), sorted(changed)[:5]
    assert any(name.startswith("value_head") for name in changed)
    assert any("lora_B" in name for name in changed) and any("lora_A" in name for name in changed)
    base = load_lm(cfg.model, for_training=False, tokenizer=load_tokenizer(cfg.model))
    with torch.no_grad():
        expected = base(input_ids=captured["ids"]).logits
    assert torch.equal(captured["reference"], expected)


@pytest.mark.slow
def test_critic_warmup_keeps_the_policy_frozen(tmp_path, monkeypatch):
    cfg = config(
        tmp_path, peft={"method": "lora"}, max_steps=2, critic={"warmup_steps": 2}, optimizer={"lr": 1e-2}
    )
    captured = run_capturing(cfg, monkeypatch)
    assert captured["changed"] == {"value_head.weight"}
    assert all(v is not None for v in captured["summary"]["value_loss"])


@pytest.mark.slow
def test_qlora_with_gradient_checkpointing_runs_and_saves_the_adapter(tmp_path, monkeypatch):
    cfg = config(
        tmp_path, model={"path": "builtin:tiny", "gradient_checkpointing": True}, peft={"method": "qlora"},
        max_steps=2, optimizer={"lr": 1e-2},
    )  # fmt: skip
    captured = run_capturing(cfg, monkeypatch)
    # bitsandbytes re-packs 4-bit weights when they move to their device; they are frozen throughout.
    changed = captured["changed"] - captured["frozen_4bit"]
    assert captured["frozen_4bit"] and changed
    assert all("lora_" in name or name.startswith("value_head") for name in changed), sorted(changed)[:5]
    summary = captured["summary"]
    assert summary["policy_saved_as"] == "adapter"
    assert (Path(summary["policy_dir"]) / "adapter_config.json").is_file()
    assert (Path(summary["critic_dir"]) / "rlhf_value_head.safetensors").is_file()


@pytest.mark.slow
def test_saved_shared_critic_reloads_on_its_own_and_can_start_a_later_run(tmp_path):
    from rlhf.config.parts import ModelConfig
    from rlhf.models.scalar import load_scalar_model
    from rlhf.ppo.policy import VALUE_HEAD_FILE, read_head_weight

    cfg = config(tmp_path, peft={"method": "lora"}, max_steps=2)
    result = run_ppo(cfg)
    critic_dir = Path(result.summary["critic_dir"])
    critic = load_scalar_model(ModelConfig(path=str(critic_dir)), for_training=False)
    policy = result.policy.eval()  # the LoRA is merged into it, as in the saved critic
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        ours = policy(ids, mask, ids[:, 3:]).values  # (1, 3): states before tokens 3, 4, 5
        saved = critic(input_ids=ids, attention_mask=mask).values[:, 2:5]
    # The same merged weights read out by the saved classifier and by the policy's head: one forward
    # of the tiny Llama rounded another way, on values of about 1.
    tol = reorder_tol(1.0, TINY_TERMS)
    torch.testing.assert_close(saved, ours, atol=tol, rtol=0)
    head = read_head_weight(critic_dir)
    assert (critic_dir / VALUE_HEAD_FILE).is_file()
    # A later run starts its value head from the saved critic.
    later = config(
        tmp_path / "later", peft={"method": "lora"}, critic={"model": str(critic_dir)}, max_steps=1
    )
    from rlhf.models import load_tokenizer
    from rlhf.ppo.setup import build_models

    built = build_models(later, load_tokenizer(later.model), "cpu")
    assert torch.equal(built.policy.value_head.weight.detach(), head)
    assert any("value head initialised" in note for note in built.notes)


@pytest.mark.slow
def test_separate_critic_from_the_reward_model(tmp_path):
    from rlhf.config.parts import ModelConfig
    from rlhf.models import load_tokenizer
    from rlhf.models.scalar import load_scalar_model, save_scalar_model

    tokenizer = load_tokenizer(ModelConfig())
    rm = load_scalar_model(ModelConfig(), tokenizer=tokenizer)
    save_scalar_model(rm, tmp_path / "rm", tokenizer, extra={"reward_mean": 0.0, "reward_std": 1.0})
    cfg = config(
        tmp_path, reward={"function": None, "model": str(tmp_path / "rm")},
        critic={"mode": "separate", "init_from_reward": True, "lr": 1e-3}, max_steps=3,
    )  # fmt: skip
    result = run_ppo(cfg)
    summary = result.summary
    assert all(v is not None and math.isfinite(v) for v in summary["value_loss"])
    critic = load_scalar_model(ModelConfig(path=summary["critic_dir"]), for_training=False)
    start = load_scalar_model(ModelConfig(path=str(tmp_path / "rm")), for_training=False)
    moved = [not torch.equal(a, b) for a, b in zip(critic.parameters(), start.parameters())]
    assert any(moved)


@pytest.mark.slow
def test_ptx_kl_in_the_loss_and_the_adaptive_controller(tmp_path):
    cfg = config(
        tmp_path, max_steps=4,
        loss={"ptx_coef": 0.5, "ptx_data": {"path": PROMPTS, "max_length": 64}, "ptx_batch_size": 2},
        kl={"placement": "loss", "controller": "adaptive", "target": 0.01, "horizon": 10},
    )  # fmt: skip
    run_ppo(cfg)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "ppo/beta" in r]
    assert all(math.isfinite(r["ppo/ptx_loss"]) and r["ppo/ptx_loss"] > 0 for r in steps)
    assert all("ppo/kl_loss" in r for r in steps)
    betas = [r["ppo/beta"] for r in steps]
    assert betas[0] == 0.05 and betas[-1] != betas[0]  # KL above the tiny target: beta moves
    assert any(r.get("ppo/kl_flagged") for r in steps)  # far beyond its target: flagged


@pytest.mark.slow
def test_nan_rewards_skip_updates_then_stop_with_a_clear_error(tmp_path):
    from rlhf.training.guards import NonFiniteError

    module = tmp_path / "bad_reward.py"
    module.write_text("def nan(prompts, completions):\n    return [float('nan')] * len(completions)\n")
    cfg = config(tmp_path, reward={"function": f"{module}:nan"}, max_nonfinite=2, max_steps=5)
    with pytest.raises(NonFiniteError, match=r"3 updates had a NaN or infinite"):
        run_ppo(cfg)
    log = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert '"ppo/skipped": 1.0' in log


@pytest.mark.slow
def test_a_generation_engine_can_be_swapped_in(tmp_path):
    from rlhf.ppo.rollout import HFGenerator

    class Counting(HFGenerator):
        calls = 0
        synced = 0

        def sync(self, policy):
            Counting.synced += 1
            super().sync(policy)

        def generate(self, prompt_ids):
            Counting.calls += 1
            return super().generate(prompt_ids)

    cfg = config(tmp_path, max_steps=2)
    from rlhf.models import load_tokenizer

    run_ppo(cfg, generator=Counting(load_tokenizer(cfg.model), cfg.rollout.sampling))
    assert Counting.calls == 2 and Counting.synced == 2


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"advantage": {"estimator": "rloo"}, "rollout": {"samples_per_prompt": 1}},
            "samples_per_prompt",
        ),
        ({"minibatch_size": 3}, "must divide the rollout"),
        ({"peft": {"method": "prompt_tuning"}}, "not supported by PPO"),
    ],
)
def test_config_errors_say_what_to_change(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        config(tmp_path, **overrides)


def test_critic_from_the_reward_needs_a_reward_model_when_the_run_starts(tmp_path):
    # Not when the config loads: the pipeline fills `reward.model` in after loading its `ppo` section.
    cfg = config(tmp_path, critic={"init_from_reward": True})
    with pytest.raises(ConfigError, match="needs `reward.model`"):
        run_ppo(cfg)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


@pytest.mark.slow
def test_ppo_learns_with_lora_on_a_pretrained_model(tmp_path, tinystories_path):
    cfg = config(
        tmp_path, model={"path": str(tinystories_path)}, peft={"method": "lora"}, prompt={"template": "raw"},
        optimizer={"lr": 1e-2},
    )  # fmt: skip
    summary = run_ppo(cfg).summary
    assert climbs(summary["reward"], 0.5), summary["reward"]
    assert summary["policy_saved_as"] == "model"


def test_policy_readout_matches_the_full_model_and_ignores_padding():
    """Log-probs and entropy at the response positions equal a plain forward of each sequence alone,
    however the batch pads it (prompts left, responses right)."""
    from rlhf.models.readout import entropy_from_logits
    from rlhf.models.tiny import build_tiny_model
    from rlhf.ppo.policy import PolicyValue
    from rlhf.ppo.rollout import collate

    lm, tokenizer = build_tiny_model(seed=3)
    policy = PolicyValue(lm, value_head=True, temperature=0.7).eval()
    queries, responses = [[5, 6, 7], [8, 9, 10, 11, 12]], [[20, 21, 22, 23], [30]]
    batch = collate(queries, responses, tokenizer.pad_token_id, "cpu")
    out = policy(batch["input_ids"], batch["attention_mask"], batch["response"], entropy=True)
    assert out.entropy.grad_fn is None and out.logprobs.grad_fn is not None
    for row, (q, r) in enumerate(zip(queries, responses)):
        with torch.no_grad():
            logits = lm(input_ids=torch.tensor([q + r])).logits[0, len(q) - 1 : -1] / 0.7  # (len(r), V)
        expected = torch.log_softmax(logits, -1).gather(-1, torch.tensor(r)[:, None]).squeeze(-1)
        # A padded batch against each sequence alone: one forward's sums rounded another way, on
        # log-probs and entropies of about log 512.
        tol = reorder_tol(LOGPROB, TINY_TERMS)
        torch.testing.assert_close(out.logprobs[row, : len(r)].detach(), expected, atol=tol, rtol=0)
        torch.testing.assert_close(out.entropy[row, : len(r)], entropy_from_logits(logits), atol=tol, rtol=0)
    graded = policy(batch["input_ids"], batch["attention_mask"], batch["response"], entropy="grad")
    assert graded.entropy.grad_fn is not None


@pytest.mark.slow
def test_target_kl_stops_the_epochs_early_and_the_first_update_starts_at_ratio_one(tmp_path):
    run_ppo(config(tmp_path, max_steps=2, loss={"target_kl": 1e-6}))
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "ppo/updates" in r]
    # One minibatch per epoch: the first update starts from the rollout's own policy (approximate
    # KL ~0: dropout is off and the log-probs agree however sequences are batched), the second
    # sees the moved policy and stops the remaining epochs.
    assert [r["ppo/updates"] for r in steps] == [2, 2]
    assert all(r["ppo/early_stop"] == 1.0 for r in steps)


@pytest.mark.parametrize("peft", ["lora", "none"])
def test_a_reference_of_its_own_is_the_model_the_kl_is_measured_from(tmp_path, peft):
    """`reference`: PPO starts from one policy and measures its KL from another (an earlier
    round's policy leashed to the SFT model): the reference reads out as that model, under LoRA
    too (a frozen copy, not the adapter-off start)."""
    from rlhf.models import load_lm, load_tokenizer, save_tiny
    from rlhf.ppo.policy import PolicyValue
    from rlhf.ppo.setup import build_models

    start, sft = save_tiny(tmp_path / "start", seed=1), save_tiny(tmp_path / "sft", seed=0)
    cfg = config(tmp_path, model={"path": str(start)}, reference=str(sft), peft={"method": peft})
    tokenizer = load_tokenizer(cfg.model)
    built = build_models(cfg, tokenizer, torch.device("cpu"))
    ids, mask, response = (
        torch.tensor([[5, 6, 7, 8, 9]]),
        torch.ones(1, 5, dtype=torch.long),
        torch.tensor([[8, 9]]),
    )
    with torch.no_grad():
        got = built.reference(ids, mask, response).logprobs
        sft_lm = load_lm(cfg.model.__class__(path=str(sft)), for_training=False, tokenizer=tokenizer)
        want = PolicyValue(sft_lm, value_head=False, temperature=cfg.rollout.sampling.temperature)(
            ids, mask, response, values=False
        ).logprobs
        start_logprobs = built.policy(ids, mask, response, values=False).logprobs
    assert torch.equal(got, want)  # the same weights and the same forward on the same input
    assert not torch.allclose(got, start_logprobs, atol=1e-3)  # two random models differ
    assert any("reference: a frozen copy of" in note and str(sft) in note for note in built.notes)
