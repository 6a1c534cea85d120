"""Tolerances for comparing two floating-point computations of one quantity, derived from what differs.

Two runs that add the same numbers in another order (2 processes against 1, micro-batches against
one batch, packed rows against padded ones) cannot agree to the last bit. Adding `terms` numbers of
magnitude `scale` in another order moves the sum by at most about terms x eps x (sum of |x|), so a
*mean* of them moves by at most terms x eps x scale (eps: the dtype's unit roundoff). Each optimizer
update that follows starts from weights that already differ by that much, so a quantity measured
after `updates` updates can drift by about that much per update.

The bound is a worst case (typical rounding errors grow like sqrt(terms), not terms), so it holds
run after run; and it stays orders of magnitude below what a real bug gives (a token count or a
baseline taken per process instead of over all of them moves a loss by percents).
"""

from __future__ import annotations

EPS = {"float32": 2.0**-23, "float64": 2.0**-52, "bfloat16": 2.0**-7}
"""Unit roundoff (the distance from 1 to the next number) of each dtype."""


def reorder_tol(scale: float, terms: int, *, updates: int = 0, dtype: str = "float32") -> float:
    """Absolute tolerance for a mean of `terms` values of magnitude `scale` computed in another order,
    after `updates` optimizer updates that each carry the previous difference forward."""
    return terms * EPS[dtype] * scale * (1 + updates)


TINY_TERMS = 2 * (64 + 192)
"""Additions behind each output of the built-in tiny Llama (2 layers; each output of a layer sums 64
attention and 192 MLP inputs): what another batch shape or packing rounds differently."""

LOGPROB = 6.2
"""|log p| of a token under the tiny models' 512-token vocabulary (log 512 = 6.24): the size of the
numbers a log-prob, a KL or an NLL is made of."""
