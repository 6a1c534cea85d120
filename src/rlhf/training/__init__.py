"""Plain training loops on Accelerate, shared by every stage: optimizer, schedule, the step loop."""

from rlhf.training.loop import LoopOptions, LoopResult, make_accelerator, train_loop, watch_steps
from rlhf.training.optim import build_optimizer, build_scheduler, lr_multiplier

__all__ = [
    "LoopOptions",
    "LoopResult",
    "build_optimizer",
    "build_scheduler",
    "lr_multiplier",
    "make_accelerator",
    "train_loop",
    "watch_steps",
]
