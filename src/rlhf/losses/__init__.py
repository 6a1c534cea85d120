"""Loss functions as plain tensor math: torch only, no model or framework imports, hand-checked in tests."""

from rlhf.losses.lm import token_nll

__all__ = ["token_nll"]
