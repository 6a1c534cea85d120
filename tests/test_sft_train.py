"""Small real SFT runs that must learn, and change exactly the weights they are meant to."""

from __future__ import annotations

import pytest
import torch

from rlhf.config import load_config
from rlhf.sft import SftConfig, run_sft
from tolerance import LOGPROB, reorder_tol

DEMO = "src/rlhf/assets/demo/demonstrations.jsonl"


def config(tmp_path, *overrides: str) -> SftConfig:
    base = [
        f"data.path={DEMO}",
        "data.max_length=96",
        "optimizer.lr=3e-3",
        "optimizer.warmup_steps=0",
        "max_steps=12",
        "batch_size=4",
        f"output_dir={tmp_path / 'run'}",
        "logging.progress=false",
        "logging.tensorboard=false",
    ]
    return load_config(SftConfig, None, base + list(overrides))


def tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def changed(before: dict[str, torch.Tensor], model: torch.nn.Module) -> set[str]:
    after = dict(model.named_parameters())
    return {name for name, t in before.items() if not torch.equal(t, after[name].detach())}


@pytest.mark.slow
def test_full_finetune_on_shared_alpaca_eval_loss_falls(tmp_path, shared_dir, tinystories_path):
    cfg = config(
        tmp_path,
        f"model.path={tinystories_path}",
        f"data.path={shared_dir / 'data' / 'alpaca_en_demo.json'}",
        "data.limit=120",
        "data.max_length=128",
        "eval.fraction=0.15",
        "eval.every=10",
        "eval.generations=2",
        "eval.max_new_tokens=8",
        "max_steps=20",
        "batch_size=8",
        "optimizer.lr=2e-3",
    )
    summary = run_sft(cfg).summary
    evals = [e["loss"] for e in summary["eval"]]
    assert [e["step"] for e in summary["eval"]] == [0, 10, 20]
    assert evals[-1] < evals[0] - 0.3, evals
    assert summary["eval"][-1]["perplexity"] == pytest.approx(torch.tensor(evals[-1]).exp().item(), rel=1e-4)
    rows = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert '"eval/samples"' in rows and "REFERENCE:" in rows
    # The saved model is a plain Hugging Face directory.
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "model").num_parameters() > 0


@pytest.mark.slow
def test_lora_changes_only_adapter_weights(tmp_path, tinystories_path):
    from transformers import AutoModelForCausalLM

    cfg = config(tmp_path, f"model.path={tinystories_path}", "peft.method=lora", "peft.lora_rank=4")
    result = run_sft(cfg)
    losses = result.summary["train_loss"]
    assert losses[-1] < losses[0]
    params = dict(result.model.named_parameters())
    base = AutoModelForCausalLM.from_pretrained(tinystories_path)
    for name, value in base.named_parameters():
        wrapped = next(
            k for k in params if k.endswith(name.replace(".weight", ".base_layer.weight")) or k.endswith(name)
        )
        assert torch.equal(params[wrapped].detach(), value.detach()), name
    lora_b = [p for k, p in params.items() if "lora_B" in k]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # B starts at zero: it must have moved
    assert (tmp_path / "run" / "model" / "adapter_config.json").is_file()


@pytest.mark.slow
def test_qlora_trains_adapters_on_a_frozen_4bit_base(tmp_path):
    from rlhf.config import ModelConfig
    from rlhf.models import load_lm

    cfg = config(tmp_path, "peft.method=qlora", "peft.target_modules=[all-linear]")
    result = run_sft(cfg)
    assert result.summary["train_loss"][-1] < result.summary["train_loss"][0]
    fresh = load_lm(ModelConfig(quantization="4bit"), for_training=False)
    trained = {
        k.replace("base_model.model.", "").replace(".base_layer", ""): p
        for k, p in result.model.named_parameters()
    }
    packed = [(n, p) for n, p in fresh.named_parameters() if type(p).__name__ == "Params4bit"]
    assert packed
    for name, value in packed:
        assert torch.equal(trained[name].data, value.data), name  # the packed 4-bit bytes are untouched
    assert all(p.abs().sum() > 0 for k, p in result.model.named_parameters() if "lora_B" in k)


@pytest.mark.slow
def test_prompt_tuning_changes_only_the_soft_prompt(tmp_path):
    from rlhf.models import build_tiny_model

    cfg = config(tmp_path, "peft.method=prompt_tuning", "peft.num_virtual_tokens=4", "optimizer.lr=3e-2")
    result = run_sft(cfg)
    assert result.summary["train_loss"][-1] < result.summary["train_loss"][0]
    model = result.model
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("prompt_encoder" in n for n in trainable)
    base, _ = build_tiny_model()
    for name, value in model.get_base_model().named_parameters():
        assert torch.equal(value, dict(base.named_parameters())[name]), name


@pytest.mark.slow
def test_selective_finetuning_changes_only_the_unfrozen_layers(tmp_path, tinystories_path):
    from transformers import AutoModelForCausalLM

    cfg = config(tmp_path, f"model.path={tinystories_path}", "freeze.train_last_layers=1")
    result = run_sft(cfg)
    base = AutoModelForCausalLM.from_pretrained(tinystories_path)
    moved = changed(tensors(base), result.model)
    last = f"model.layers.{base.config.num_hidden_layers - 1}."
    assert moved and all(name.startswith(last) for name in moved), sorted(moved)
    n_last = sum(1 for name, _ in base.named_parameters() if name.startswith(last))
    assert len(moved) == n_last  # every parameter of the last block learned


@pytest.mark.slow
def test_gradient_accumulation_matches_a_bigger_batch(tmp_path):
    """batch 2 x accumulation 2 sees the rows of batch 4 x 1 and normalizes by the same token count."""
    big = run_sft(config(tmp_path / "a", "batch_size=4", "max_steps=6")).summary["train_loss"]
    small = run_sft(
        config(tmp_path / "b", "batch_size=2", "optimizer.gradient_accumulation_steps=2", "max_steps=6")
    ).summary["train_loss"]
    # Token means of NLLs (~6) over a step's 4 rows of up to 64 tokens, summed in two micro-batches
    # instead of one, after up to 6 updates.
    assert small == pytest.approx(big, abs=reorder_tol(LOGPROB, 4 * 64, updates=6))


@pytest.mark.slow
def test_gradient_checkpointing_gives_the_same_losses(tmp_path):
    plain = run_sft(config(tmp_path / "a", "max_steps=4")).summary["train_loss"]
    checkpointed = run_sft(config(tmp_path / "b", "max_steps=4", "model.gradient_checkpointing=true"))
    # Recomputing activations repeats the same operations: only the backward's summation order may
    # differ, over a step's token mean (4 rows of up to 64 tokens), after up to 4 updates.
    assert checkpointed.summary["train_loss"] == pytest.approx(
        plain, abs=reorder_tol(LOGPROB, 4 * 64, updates=4)
    )


@pytest.mark.slow
def test_packing_off_and_all_token_loss_train_too(tmp_path):
    result = run_sft(config(tmp_path, "packing=false", "completion_only=false", "max_steps=8"))
    losses = result.summary["train_loss"]
    assert losses[-1] < losses[0]


@pytest.mark.slow
def test_bf16_mixed_precision_on_cpu(tmp_path):
    losses = run_sft(config(tmp_path, "mixed_precision=bf16")).summary["train_loss"]
    assert losses[-1] < losses[0] - 0.3
