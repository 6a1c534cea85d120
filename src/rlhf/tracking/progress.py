"""Progress bars for long loops: ETA from tqdm, the live loss in the postfix."""

from __future__ import annotations

import sys
from typing import Any


def progress_bar(total: int | None, desc: str, *, enabled: bool = True, unit: str = "step") -> Any:
    """A tqdm bar; call `.set_postfix(loss=...)` as values arrive and `.update(n)` per step.

    Disabled bars (other ranks, `logging.progress: false`) still accept the same calls.
    Output goes to stderr so a command's stdout stays machine-readable.
    """
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        disable=not enabled,
        dynamic_ncols=True,
        file=sys.stderr,
        mininterval=0.5,
    )
