"""`rlhf dpo`: direct preference optimization (DPO, conservative DPO, IPO) from preference pairs."""

from rlhf.dpo.config import DpoConfig

__all__ = ["DpoConfig", "run_dpo"]


def __getattr__(name: str):
    if name == "run_dpo":  # the training module imports torch; the config alone stays light
        from rlhf.dpo.train import run_dpo

        return run_dpo
    raise AttributeError(name)
