"""The C heap: freed memory given back to the system between stages, and kept within a stage.

numpy's temporaries of a few hundred kilobytes come from the C heap, and glibc's malloc returns only the
top of the heap to the system: after the tracker frees its slots, the holes they leave stay resident
(measured on a million bare RSTs: 150 MB resident after tracking, 82 MB once trimmed).  ``malloc_trim``
gives the free pages back wherever they are (:func:`give_back`).

Within a stage, giving memory back costs: on a virtual machine with free page reporting
(``virtio_balloon``, as on this project's machines), memory the guest frees goes back to the host within
seconds, and a page touched again costs a fault on the host (writing 3 GB to a new file took 8.1 s, into
pages just freed 0.7 s: benchmarks/PLAN.md §24).  glibc gives the top of its heap back once more than
``M_TRIM_THRESHOLD`` is free there, keeping ``M_TOP_PAD`` (128 kB by default), so a command that
allocates and frees chunk-sized arrays over and over gets fresh pages again and again.
:func:`keep_freed_top` keeps 16 MB free at the top for ``analyze``, a command that ends when its work
is done (not for ``watch``, which runs for days).  Setting it turns off glibc's dynamic mmap threshold,
which would otherwise rise to 32 MB as large blocks are freed; so the threshold is set to those 32 MB
too (alone, ``M_TOP_PAD`` left every array over 128 kB a fresh mapping: the SYN flood 3.8-5.2 -> 6.2-6.3
s).  Measured with both, in turn with the defaults (1M packets each): long flows 0.44-0.53 -> 0.35 s,
the SYN flood 4.0-4.1 -> 3.6 s, short connections 1.11-1.15 -> 1.07-1.16 s; peak RSS +1 MB on long
flows, +6.5 MB on short connections.  ``MALLOC_TOP_PAD_`` or ``MALLOC_MMAP_THRESHOLD_`` in the
environment is the user's choice and stands.

Elsewhere than glibc all of this does nothing.
"""

from __future__ import annotations

import ctypes
import functools
import os

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -2, -3, -8  # mallopt parameters (malloc.h)
TOP_PAD = 16 << 20
MMAP_THRESHOLD = 32 << 20
"""glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit: where its dynamic threshold stops."""


@functools.cache
def libc() -> ctypes.CDLL | None:
    """glibc, from the symbols the interpreter already has (it has ``mallopt`` and ``malloc_trim``), else
    None."""
    try:
        lib = ctypes.CDLL(None)
    except OSError:
        return None
    return lib if hasattr(lib, "mallopt") and hasattr(lib, "malloc_trim") else None


def give_back() -> None:
    """Return the C heap's free pages to the system (after a stage that freed much: the next stage's
    peak is then what it holds, not what the heap once held)."""
    lib = libc()
    if lib is not None:
        lib.malloc_trim(0)


def keep_freed_top(pad: int = TOP_PAD) -> bool:
    """Keep ``pad`` bytes free at the top of the heap rather than give them back, and blocks under
    :data:`MMAP_THRESHOLD` in the heap; whether it was set.  Forked children (the reader child) inherit it.

    Threads then allocate from the same heap (one arena, unless ``MALLOC_ARENA_MAX`` says otherwise): a
    thread's own arena would keep ``pad`` free at its top too (the thread that prepares chunks while the
    tracker tracks, rstscope.ahead; measured on a million connections each ending in a RST: 192-194 MB
    with an arena of its own, 187-188 MB without, the same time)."""
    if os.environ.get("MALLOC_TOP_PAD_") or os.environ.get("MALLOC_MMAP_THRESHOLD_"):
        return False
    lib = libc()
    if lib is None or not (lib.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and lib.mallopt(M_TOP_PAD, pad)):
        return False
    if not os.environ.get("MALLOC_ARENA_MAX"):
        lib.mallopt(M_ARENA_MAX, 1)
    return True
