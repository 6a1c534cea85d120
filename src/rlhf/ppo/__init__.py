"""Stage 3: reinforcement learning from the reward (`rlhf ppo`): PPO with a critic (GAE) or the
critic-free REINFORCE, RLOO and GRPO, against a reward model, a Python function or an HTTP
endpoint, with a KL penalty to the starting (SFT) model.

    from rlhf.ppo import PpoConfig, run_ppo
    result = run_ppo(PpoConfig(...))
"""

from rlhf.ppo.config import PpoConfig
from rlhf.ppo.train import PpoResult, run_ppo

__all__ = ["PpoConfig", "PpoResult", "run_ppo"]
