"""Optimizer groups and the learning-rate schedule, against hand-worked values."""

import math

import pytest
import torch

from rlhf.config import OptimizerConfig
from rlhf.training import build_optimizer, build_scheduler, lr_multiplier


def test_warmup_then_linear_decay_by_hand():
    # warmup 3 of 13 steps: 1/4, 2/4, 3/4, then 1.0 falling by 1/10 per step
    got = [lr_multiplier(s, 13, 3, "linear") for s in range(13)]
    assert got[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert got[4:] == pytest.approx([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])


def test_cosine_and_constant():
    assert lr_multiplier(0, 10, 0, "cosine") == pytest.approx(1.0)
    assert lr_multiplier(5, 10, 0, "cosine") == pytest.approx(0.5)  # halfway: (1 + cos(pi/2)) / 2
    assert lr_multiplier(2, 10, 0, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.2)))
    assert lr_multiplier(7, 10, 2, "constant") == 1.0


@pytest.mark.slow
def test_scheduler_drives_the_optimizer_lr():
    model = torch.nn.Linear(3, 2)
    cfg = OptimizerConfig(lr=0.1, warmup_ratio=0.25, scheduler="linear")
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, total_steps=8)  # warmup = int(0.25 * 8) = 2
    lrs = []
    for _ in range(8):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx(
        [0.1 / 3, 0.2 / 3, 0.1, 0.1 * 5 / 6, 0.1 * 4 / 6, 0.1 * 3 / 6, 0.1 * 2 / 6, 0.1 / 6]
    )


def test_no_weight_decay_on_biases_and_frozen_params_left_out():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 1))
    model[2].weight.requires_grad_(False)
    opt = build_optimizer(model, OptimizerConfig(weight_decay=0.1))
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == 0.1 and [p.shape for p in decayed["params"]] == [(4, 4)]
    assert plain["weight_decay"] == 0.0 and len(plain["params"]) == 4  # 2 biases + norm weight and bias


def test_nothing_trainable_is_an_error():
    model = torch.nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer(model, OptimizerConfig())
