"""Building what a PPO run trains and saving what it trained: the policy, its reference, the critic.

Memory layout by configuration:

    peft lora/qlora, critic shared   one base model: the actor (adapter on), the reference (adapter
                                     off) and the value head on the actor's hidden states
    peft none, critic shared         the policy + a frozen reference copy
    critic separate                  + a `ScalarModel` of its own (with its own adapter under lora)

Under FSDP2 and DeepSpeed the policy with its value head is the one sharded model (Accelerate
shards one trained model per run: one FSDP2 root, or one DeepSpeed engine with one optimizer); the
frozen reference copy (full fine-tuning) and the reward model are placed whole on every process:
they hold weights only (4 bytes a parameter in float32, against 16 for a trained model's weights,
gradients and Adam moments), and whole they run without a collective per layer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rlhf.config.core import ConfigError
from rlhf.models.readout import disable_dropout
from rlhf.ppo.config import PpoConfig
from rlhf.ppo.policy import VALUE_HEAD_FILE, PolicyOutput, PolicyValue, read_head_weight


@dataclass
class Built:
    """The run's models before Accelerate prepares them."""

    policy: PolicyValue
    reference: Callable[..., PolicyOutput]
    """reference(input_ids, attention_mask, response) -> the reference's `PolicyOutput`."""
    critic: torch.nn.Module | None
    """A separate `ScalarModel` critic, or None."""
    notes: list[str]
    """One line per choice made while building (printed by the run)."""


def build_models(cfg: PpoConfig, tokenizer, device) -> Built:
    """Policy (+ shared value head), reference, and separate critic as `cfg` asks."""
    from rlhf.models import load_lm
    from rlhf.models.adapters import adapters_disabled
    from rlhf.training.sharding import whole_on_each_process

    notes = []
    lm = load_lm(cfg.model, cfg.peft, for_training=True, tokenizer=tokenizer)
    disable_dropout(lm)
    shared = cfg.uses_critic and cfg.critic.mode == "shared"
    policy = PolicyValue(lm, value_head=shared, temperature=cfg.rollout.sampling.temperature)
    if shared:
        source = cfg.critic.model or (cfg.reward.model if cfg.critic.init_from_reward else None)
        if source:
            _copy_head(policy, source)
            notes.append(f"value head initialised from {source}")
    own_reference = cfg.reference if cfg.reference not in (None, cfg.model.path) else None
    if cfg.peft.method == "none" or own_reference:
        ref_cfg = dataclasses.replace(cfg.model, path=own_reference) if own_reference else cfg.model
        if own_reference:
            _check_same_vocabulary(ref_cfg, tokenizer, cfg.model.path, "the reference", "e.g. the SFT model")
        with whole_on_each_process():  # frozen, outside any engine (ZeRO-3 would partition it)
            ref_lm = load_lm(ref_cfg, for_training=False, tokenizer=tokenizer)
        ref = PolicyValue(ref_lm, value_head=False, temperature=cfg.rollout.sampling.temperature)
        ref.to(device)
        what = f"{cfg.reference}" if own_reference else "the starting model (full fine-tuning)"
        notes.append(f"reference: a frozen copy of {what}, whole on each process")

        def reference(*inputs):
            return ref(*inputs, values=False)
    else:
        notes.append("reference: the same weights with the adapter switched off (no second copy)")

        def reference(*inputs):
            with adapters_disabled(policy.lm):
                return policy(*inputs, values=False)

    critic = None
    if cfg.uses_critic and cfg.critic.mode == "separate":
        critic = _load_critic(cfg, tokenizer)
        notes.append(f"critic: a separate model from {_critic_path(cfg)}")
    elif shared:
        notes.append("critic: a value head on the policy's hidden states")
    return Built(policy, reference, critic, notes)


def _check_same_vocabulary(model_cfg, tokenizer, policy_path: str, what: str, hint: str) -> None:
    """A reference or a separate critic reads the policy's tokens: it must share its vocabulary."""
    from rlhf.models import load_tokenizer

    if load_tokenizer(dataclasses.replace(model_cfg, tokenizer=None)).get_vocab() != tokenizer.get_vocab():
        raise ConfigError(
            f"{what} {model_cfg.path} has a different tokenizer from the policy {policy_path}; it reads the "
            f"policy's tokens, so it needs the same vocabulary ({hint})"
        )


def _copy_head(policy: PolicyValue, source: str) -> None:
    weight = read_head_weight(source)
    assert policy.value_head is not None, "a shared critic has a value head"
    target = policy.value_head.weight
    if tuple(weight.shape) != tuple(target.shape):
        raise ConfigError(
            f"the scalar head in {source} has shape {tuple(weight.shape)} but the policy's value head needs "
            f"{tuple(target.shape)} (a different hidden size): use `critic.mode: separate` for a critic "
            "on another model, or start the head fresh"
        )
    with torch.no_grad():
        target.copy_(weight.to(target.dtype))


def _critic_path(cfg: PpoConfig) -> str:
    if cfg.critic.model:
        return cfg.critic.model
    if cfg.critic.init_from_reward and cfg.reward.model:  # run_ppo checked it is set
        return cfg.reward.model
    return cfg.model.path


def _load_critic(cfg: PpoConfig, tokenizer):
    """A `ScalarModel` on the policy's tokenizer (its values are read at the policy's token positions)."""
    from rlhf.models.scalar import load_scalar_model

    path = _critic_path(cfg)
    model_cfg = dataclasses.replace(cfg.model, path=path, tokenizer=None)
    _check_same_vocabulary(
        model_cfg,
        tokenizer,
        cfg.model.path,
        "the critic",
        "use `critic.mode: shared`, or a critic on the policy's model",
    )
    critic = load_scalar_model(model_cfg, cfg.peft, for_training=True, tokenizer=tokenizer)
    disable_dropout(critic)
    return critic


def prepare_models(cfg: PpoConfig, accelerator, built: Built, pad_id: int):
    """Optimizers and schedules for the policy and the critic (each its own, so critic warm-up can
    step one alone and `critic.lr` can differ), all passed through `accelerator.prepare`."""
    from rlhf.ppo.run_state import Models
    from rlhf.training import build_optimizer, build_scheduler
    from rlhf.training.sharding import is_deepspeed

    policy, critic = built.policy, built.critic
    rollout = cfg.rollout.prompts_per_step * cfg.rollout.samples_per_prompt
    total_updates = (
        cfg.max_steps * cfg.ppo_epochs * (rollout // cfg.minibatch_size)
    )  # at most: target_kl may stop early
    if is_deepspeed(accelerator):
        return _prepare_on_deepspeed(cfg, accelerator, policy, pad_id, total_updates)
    policy_optimizer = build_optimizer(policy.lm, cfg.optimizer)
    policy_scheduler = build_scheduler(policy_optimizer, cfg.optimizer, total_updates)
    value_optimizer = value_scheduler = None
    if critic_parameters(policy, critic):
        value_cfg = dataclasses.replace(cfg.optimizer, lr=cfg.critic.lr or cfg.optimizer.lr)
        value_module = critic if critic is not None else policy.value_head
        assert value_module is not None  # critic_parameters found some
        value_optimizer = build_optimizer(value_module, value_cfg)
        value_scheduler = build_scheduler(value_optimizer, value_cfg, total_updates)
    extras = [x for x in (value_optimizer, critic) if x is not None]
    policy_w, policy_optimizer, *rest = accelerator.prepare(policy, policy_optimizer, *extras)
    value_optimizer = rest.pop(0) if value_optimizer is not None else None
    critic_w = rest.pop(0) if critic is not None else None
    unwrapped = accelerator.unwrap_model(policy_w)
    _start_root(policy_w, pad_id, accelerator.device)
    return Models(
        policy=policy_w, critic=critic_w, policy_optimizer=policy_optimizer, value_optimizer=value_optimizer,
        policy_scheduler=policy_scheduler, value_scheduler=value_scheduler,
        policy_params=[p for p in unwrapped.lm.parameters() if p.requires_grad],
        value_params=critic_parameters(unwrapped, accelerator.unwrap_model(critic_w) if critic_w else None),
        pad_id=pad_id,
    )  # fmt: skip


def _prepare_on_deepspeed(cfg: PpoConfig, accelerator, policy: PolicyValue, pad_id: int, total_updates: int):
    """Under DeepSpeed the policy with its value head is one engine, and an engine has one optimizer
    (stepped inside the last backward pass of a minibatch): the value head's parameters are groups
    of the policy's AdamW at `critic.lr`, each part keeps its own schedule (`GroupSchedule`), and
    critic warm-up holds the policy's groups at learning rate 0. DeepSpeed clips the gradients of
    the whole engine together, at `optimizer.max_grad_norm`."""
    from rlhf.ppo.run_state import Models
    from rlhf.training import build_optimizer
    from rlhf.training.optim import GroupSchedule
    from rlhf.training.sharding import prepare_engine_config

    optimizer = build_optimizer(policy.lm, cfg.optimizer)
    policy_groups = list(range(len(optimizer.param_groups)))
    value_cfg = dataclasses.replace(cfg.optimizer, lr=cfg.critic.lr or cfg.optimizer.lr)
    if policy.value_head is not None:
        for group in build_optimizer(policy.value_head, value_cfg).param_groups:
            optimizer.add_param_group(group)
    value_groups = list(range(len(policy_groups), len(optimizer.param_groups)))
    policy_scheduler = GroupSchedule(optimizer, policy_groups, cfg.optimizer, total_updates)
    value_scheduler = (
        GroupSchedule(optimizer, value_groups, value_cfg, total_updates) if value_groups else None
    )
    accumulation = cfg.optimizer.gradient_accumulation_steps
    # The update marks each minibatch's last micro-batch as DeepSpeed's accumulation boundary itself:
    # to the engine every micro-batch is a batch of its own (no loss division by accumulation).
    prepare_engine_config(
        accelerator,
        micro_batch_size=cfg.minibatch_size // accumulation,
        max_grad_norm=cfg.optimizer.max_grad_norm,
    )
    engine, optimizer = accelerator.prepare(policy, optimizer)
    return Models(
        policy=engine, critic=None, policy_optimizer=optimizer, value_optimizer=None,
        policy_scheduler=policy_scheduler, value_scheduler=value_scheduler,
        policy_params=[p for p in policy.lm.parameters() if p.requires_grad],
        value_params=critic_parameters(policy, None), pad_id=pad_id,
    )  # fmt: skip


def check_sharded(cfg: PpoConfig, accelerator, engine: str) -> None:
    """One-line errors, before any model loads, for what PPO does not run sharded: a separate critic
    (a second trained model: Accelerate shards one per run, as one FSDP2 root or one DeepSpeed
    engine), and the vLLM engine's adapter sync (peft would save the adapter's shards; merged
    weights are gathered whole into the engine at every sync)."""
    from rlhf.training.sharding import is_sharded, sharding_kind

    if not is_sharded(accelerator):
        return
    kind = sharding_kind(accelerator)
    if cfg.uses_critic and cfg.critic.mode == "separate":
        raise ConfigError(
            f"on {kind} PPO's critic is a value head on the policy (`critic.mode: shared`): Accelerate shards "
            "one trained model per run, and `critic.mode: separate` is a second one"
        )
    if engine == "vllm" and cfg.rollout.vllm.lora_sync == "adapter" and cfg.peft.method != "none":
        raise ConfigError(
            f"`rollout.vllm.lora_sync: adapter` does not run on {kind} (the adapter is sharded): use "
            "`lora_sync: merged`, which gathers the weights whole into the engine at every sync"
        )


def gathered_policy(run) -> PolicyValue | None:
    """The trained `PolicyValue` of `run` (a `PpoRun`) whole: itself, or under FSDP2 its weights
    gathered into a fresh copy on the main process (None on the others). Every process calls it."""
    from rlhf.models import load_lm
    from rlhf.training.sharding import unsharded_model

    cfg, policy = run.cfg, run.policy

    def rebuild() -> PolicyValue:
        lm = load_lm(cfg.model, cfg.peft, for_training=True, tokenizer=run.tokenizer)
        return PolicyValue(lm, value_head=policy.value_head is not None, temperature=policy.temperature)

    return unsharded_model(run.accelerator, run.models.policy, policy, rebuild)


def _start_root(policy, pad_id: int, device) -> None:
    """Under FSDP2: one forward of the sharded policy on a 2-token sequence, so that it is FSDP's
    root before `generate` calls the LM inside it (see `start_fsdp_root`)."""
    from rlhf.training.sharding import start_fsdp_root

    ids = torch.full((1, 2), pad_id, dtype=torch.long, device=device)
    start_fsdp_root(policy, ids, torch.ones_like(ids), ids[:, 1:], values=False)


def critic_parameters(policy: PolicyValue, critic) -> list[torch.nn.Parameter]:
    if critic is not None:
        return [p for p in critic.parameters() if p.requires_grad]
    return list(policy.value_head.parameters()) if policy.value_head is not None else []


def value_state(policy: PolicyValue, critic) -> dict[str, torch.Tensor]:
    """The critic's trainable weights (for checkpoints)."""
    if critic is not None:
        return {k: v.detach().cpu() for k, v in critic.named_parameters() if v.requires_grad}
    if policy.value_head is not None:
        return {"weight": policy.value_head.weight.detach().cpu()}
    return {}


def load_value_state(policy: PolicyValue, critic, state: dict[str, torch.Tensor]) -> None:
    if critic is not None:
        params = dict(critic.named_parameters())
        with torch.no_grad():
            for key, value in state.items():
                params[key].copy_(value)
    elif policy.value_head is not None:
        with torch.no_grad():
            policy.value_head.weight.copy_(state["weight"])


def save_outputs(cfg: PpoConfig, policy: PolicyValue, critic, tokenizer, run_dir: Path) -> dict[str, Any]:
    """Write `policy/` and (with a critic) `critic/`; returns where they went.

    policy: LoRA is merged (the adapter's base may be an SFT model merged while loading, which exists
    nowhere else), QLoRA is saved as the adapter (a 4-bit base cannot take the merge), full as is.
    critic: a one-label classifier that `load_scalar_model` (and plain transformers) loads on its
    own, and can start a later run (`critic.model`); a shared head is also written alone
    (`rlhf_value_head.safetensors`). A shared head on a QLoRA or an encoder-decoder policy is saved
    as the head only.
    """
    from safetensors.torch import save_file

    from rlhf.files import writing
    from rlhf.models import save_model

    out: dict[str, Any] = {}
    merge = cfg.peft.method == "lora"
    policy.lm = save_model(policy.lm, tokenizer, run_dir / "policy", merge=merge)
    out["policy_dir"] = str(run_dir / "policy")
    out["policy_saved_as"] = "adapter" if cfg.peft.method == "qlora" else "model"
    critic_dir = run_dir / "critic"
    if critic is not None:
        from rlhf.models.scalar import save_scalar_model

        save_scalar_model(
            critic, critic_dir, tokenizer, extra={"ppo_critic": True}, merge=cfg.peft.method != "qlora"
        )
        out["critic_dir"] = str(critic_dir)
    elif policy.value_head is not None:
        from rlhf.models.seq2seq import is_seq2seq

        head = {"weight": policy.value_head.weight.detach().float().cpu().contiguous()}
        if cfg.peft.method == "qlora" or is_seq2seq(policy.lm):
            # An encoder-decoder's classifier class puts a hidden layer before its one label: the
            # value head (one Linear) is saved as itself.
            critic_dir.mkdir(parents=True, exist_ok=True)
        else:
            _save_shared_critic(policy, head["weight"], tokenizer, critic_dir)
        with writing(critic_dir / VALUE_HEAD_FILE):
            save_file(head, str(critic_dir / VALUE_HEAD_FILE))
        out["critic_dir"] = str(critic_dir)
    return out


def _save_shared_critic(policy: PolicyValue, weight: torch.Tensor, tokenizer, directory: Path) -> None:
    """The (merged) policy backbone with the value head as its `score`: a one-label classifier."""
    from transformers import AutoModelForSequenceClassification

    from rlhf.models.scalar import ScalarModel, save_scalar_model

    lm = policy.lm
    config = lm.config.__class__.from_dict({**lm.config.to_dict(), "num_labels": 1})
    classifier = AutoModelForSequenceClassification.from_config(config)
    prefix = lm.base_model_prefix
    getattr(classifier, prefix).load_state_dict(getattr(lm, prefix).state_dict())
    with torch.no_grad():
        classifier.score.weight.copy_(weight.to(classifier.score.weight.dtype))
    save_scalar_model(ScalarModel(classifier.to(lm.dtype)), directory, tokenizer, extra={"ppo_critic": True})
