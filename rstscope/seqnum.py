"""TCP sequence-number arithmetic, in one place.

Sequence and acknowledgment numbers are 32-bit and wrap (RFC 9293 §3.4).  The
tracker never compares raw numbers with ``<``: it *unwraps* them into int64
values relative to a per-direction anchor, and then plain integer order is the
stream order.

Wraparound rule: the distance from ``a`` to ``b`` is the signed 32-bit value of
``(b - a) mod 2**32``, i.e. in ``[-2**31, 2**31)``.  Unwrapping is correct as
long as two consecutive values of one series are less than 2 GiB apart, which
TCP's window limits (at most 2**30 bytes with window scaling) guarantee.
"""

from __future__ import annotations

import numpy as np

SEQ_MOD = 1 << 32
HALF = 1 << 31


def seq_diff(a: int, b: int) -> int:
    """Signed distance from ``a`` to ``b`` in sequence space (``b - a``, wrap-aware)."""
    return ((int(b) - int(a) + HALF) % SEQ_MOD) - HALF


def seq_diff_array(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Vectorised :func:`seq_diff` on int64 arrays (or broadcastable scalars)."""
    return ((b.astype(np.int64) - a.astype(np.int64) + HALF) % SEQ_MOD) - HALF
