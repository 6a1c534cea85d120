"""`rlhf rrhf`: rank responses to align with human feedback (RRHF): a ranking hinge over the policy's
length-normalized log-probs of each prompt's scored responses, plus SFT on the best one."""

from rlhf.rrhf.config import RrhfConfig

__all__ = ["RrhfConfig", "run_rrhf"]


def __getattr__(name: str):
    if name == "run_rrhf":  # the training module imports torch; the config alone stays light
        from rlhf.rrhf.train import run_rrhf

        return run_rrhf
    raise AttributeError(name)
