"""The cyclic garbage collector, paused where rstscope makes objects by the million and no cycles."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """The collector off for the block, back as it was after.  For the tracker (many small containers,
    a few dozen per connection) and for judging RSTs (a few objects per RST): none of them form
    reference cycles, so they go by reference counting, and the collector's passes over the growing
    heap find nothing while costing a quarter of the tracker's time on short connections and a tenth
    of the evidence's on a reset storm (measured)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
