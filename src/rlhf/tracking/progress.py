"""Progress bars for long loops: ETA from tqdm, the live loss in the postfix."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
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


@contextlib.contextmanager
def progress_block(
    total: int | None, desc: str, *, enabled: bool = True, unit: str = "step"
) -> Iterator[Any]:
    """`progress_bar` for the length of a block, closed when it ends. A block that raises clears
    its bar instead of leaving it, so a failing run's last line is its error."""
    bar = progress_bar(total, desc, enabled=enabled, unit=unit)
    try:
        yield bar
    except BaseException:
        bar.leave = False
        raise
    finally:
        bar.close()
