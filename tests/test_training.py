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


@pytest.mark.slow
def test_group_schedules_drive_their_own_groups_of_one_optimizer():
    """Two parts' schedules on one optimizer (PPO's policy and value head under DeepSpeed): each
    moves its own groups' lr from its own step count, as two optimizers' LambdaLRs would; a held
    part is at lr 0 and does not move while the other steps, and a restored count sets the lr."""
    from rlhf.training.optim import GroupSchedule

    policy, head = torch.nn.Linear(3, 2), torch.nn.Linear(2, 1, bias=False)
    cfg = OptimizerConfig(lr=0.1, warmup_steps=1, scheduler="linear")
    opt = build_optimizer(policy, cfg)  # groups 0 (weight) and 1 (bias)
    opt.add_param_group({"params": list(head.parameters()), "lr": 0.5, "weight_decay": 0.0})
    first, second = GroupSchedule(opt, [0, 1], cfg, 5), GroupSchedule(opt, [2], cfg, 5)
    # warm-up 1 of 5: factors 1/2, then 1, 2/4... (lr_multiplier, checked by hand above)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.05, 0.05, 0.25])
    first.hold()
    second.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.0, 0.0, 0.5])
    before = policy.weight.detach().clone()
    for p in [*policy.parameters(), *head.parameters()]:
        p.grad = torch.ones_like(p)
    opt.step()
    assert torch.equal(policy.weight, before)  # lr 0: AdamW moves nothing, weight decay included
    first.step()  # released by its own first step
    assert first.get_last_lr() == pytest.approx([0.1, 0.1]) and second.get_last_lr() == [0.5]
    restored = GroupSchedule(opt, [2], cfg, 5)
    restored.load_state_dict({"last_epoch": 3})  # factor 1 - (3 - 1) / 4
    assert opt.param_groups[2]["lr"] == pytest.approx(0.25) and restored.state_dict() == {"last_epoch": 3}


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


# ------------------------------------------------------------------------- the non-finite guard


def _guard_run(losses: list[float], max_nonfinite: int):
    """train_loop over a one-weight model whose loss at step i is `losses[i]` x w (NaN/inf as given)."""
    from accelerate import Accelerator

    from rlhf.training.loop import LoopOptions, train_loop

    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.ones_(model.weight)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    seen: list[float] = []

    def loss_fn(m, batch):
        seen.append(float(m.weight.detach()))
        return m.weight.sum() * losses[batch], {}

    options = LoopOptions(
        max_steps=len(losses), optim_cfg=OptimizerConfig(lr=0.1, max_grad_norm=None), progress=False,
        max_nonfinite=max_nonfinite,
    )  # fmt: skip
    batches = list(range(len(losses)))
    result = train_loop(Accelerator(cpu=True), model, optimizer, None, batches, loss_fn, options)
    return result, seen, float(model.weight.detach())


@pytest.mark.slow
def test_a_nonfinite_step_is_skipped_and_the_weights_stay():
    """Steps 2 and 3 have a NaN and an infinite loss: they are skipped (flagged, the weight as it
    was), the others train (SGD: w -= 0.1 x 1 each; float32 rounds 1 - 0.1 - 0.1 by ~1e-7, under
    the 1e-6 allowed, while a step wrongly taken moves w by 0.1)."""
    result, seen, final = _guard_run([1.0, math.nan, math.inf, 1.0], max_nonfinite=2)
    assert [row.get("skipped", 0.0) for row in result.history] == [0.0, 1.0, 1.0, 0.0]
    assert result.skipped == 2
    assert seen == pytest.approx([1.0, 0.9, 0.9, 0.9], abs=1e-6)  # the skipped steps left w at 0.9
    assert final == pytest.approx(0.8, abs=1e-6)


@pytest.mark.slow
def test_past_max_nonfinite_the_run_stops_with_a_one_line_error():
    from rlhf.training.guards import NonFiniteError

    with pytest.raises(
        NonFiniteError, match=r"^2 optimizer steps had a NaN or infinite loss, reward or gradient \(limit"
    ):
        _guard_run([1.0, math.nan, math.nan, 1.0], max_nonfinite=1)


@pytest.mark.slow
def test_a_step_watcher_sees_every_step_with_its_micro_batches():
    """What benchmarks time and count through (`watch_steps`): the loop's start, each step with its
    row and micro-batches (2 per step with accumulation 2), its end; nothing once the block ends."""
    from accelerate import Accelerator

    from rlhf.training.loop import LoopOptions, train_loop, watch_steps

    events: list = []

    class Watcher:
        def started(self) -> None:
            events.append("started")

        def stepped(self, step: int, row: dict, window: list) -> None:
            events.append((step, round(row["loss"], 6), window))

        def ended(self) -> None:
            events.append("ended")

    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.ones_(model.weight)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: every loss stays w x batch = batch
    optim_cfg = OptimizerConfig(lr=1e-3, gradient_accumulation_steps=2)  # (the SGD above steps at lr 0)
    options = LoopOptions(max_steps=2, optim_cfg=optim_cfg, progress=False)
    loss_fn = lambda m, batch: (m.weight.sum() * batch, {})  # noqa: E731
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=2)
    with watch_steps(Watcher()):
        train_loop(accelerator, model, optimizer, None, [1.0, 3.0, 5.0, 7.0], loss_fn, options)
    train_loop(accelerator, model, optimizer, None, [1.0, 3.0, 5.0, 7.0], loss_fn, options)  # unwatched
    # A step's loss is the mean of its 2 micro-batches: (1 + 3) / 2 and (5 + 7) / 2.
    assert events == ["started", (1, 2.0, [1.0, 3.0]), (2, 6.0, [5.0, 7.0]), "ended"]


def test_a_model_with_nonfinite_weights_is_never_saved(tmp_path):
    from rlhf.models import save_model
    from rlhf.models.finite import NonFiniteWeightsError

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    with torch.no_grad():
        model[1].weight[0, 1] = math.nan
    with pytest.raises(
        NonFiniteWeightsError, match=r"not saving .*: 1 of 4 weight tensors hold NaN .*first: 1\.weight"
    ):
        save_model(model, None, tmp_path / "out")
    assert not (tmp_path / "out").exists()
