"""Items taken and made ready in a thread, one ahead of the caller that uses them.

The tracker's work on a chunk is in two parts: what depends on the chunk alone (receiving it from the
reader child, grouping its rows by 4-tuple, gathering the fields it reads: compiled calls that release
the GIL) and what needs the tracker's state.  While the tracker tracks one chunk, a thread receives and
prepares the next (:func:`ahead`), on the core the reader child leaves idle once it waits for the
tracker.  The thread makes an item only once the caller took the one before: one chunk is in use, the
next one ready or in the making, never more.
"""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")
U = TypeVar("U")

_DONE = object()
_POLL_SECONDS = 0.1
"""How often a thread waiting for its turn looks whether the caller stopped."""
_JOIN_SECONDS = 5.0
"""How long the caller, stopping early, waits for the thread (which may be in the middle of a read)."""
SWITCH_SECONDS = 0.000_5
"""The interpreter's switch interval while two threads of rstscope take turns, each mostly in compiled
calls or blocking writes: one back from such a call waits at most this long for the other to let it run
(Python's default, 5 ms, is longer than it takes to prepare a chunk: on the short shape, 1M packets, the
thread of :func:`ahead` gained nothing at 5 ms).  Also the reader child's (:mod:`rstscope.prefetch`)."""


def ahead(items: Iterator[T], prepare: Callable[[T], U]) -> Iterator[U]:
    """``prepare(item)`` for each of ``items``, in order; the next item is taken and prepared in a thread
    while the caller uses the one before.  An exception raised there (by the items or by ``prepare``) is
    raised here, in its place; stopping early (an error, Ctrl-C, ``close()``) stops the thread."""
    ready: queue.Queue = queue.Queue(maxsize=1)
    turn = threading.Semaphore(1)  # released as the caller takes an item: the next one may be made
    stop = threading.Event()

    def wait_turn() -> bool:
        while not stop.is_set():
            if turn.acquire(timeout=_POLL_SECONDS):
                return True
        return False

    def work() -> None:
        try:
            iterator = iter(items)
            while wait_turn():
                item = next(iterator, _DONE)
                ready.put((item if item is _DONE else prepare(item), None))  # never waits: the caller took the last
                if item is _DONE:
                    return
        except BaseException as exc:  # raised in the caller's thread, where it belongs
            ready.put((None, exc))

    thread = threading.Thread(target=work, name="rstscope-ahead", daemon=True)
    switch = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_SECONDS)
    thread.start()
    try:
        while True:
            value, error = ready.get()
            if error is not None:
                raise error
            if value is _DONE:
                return
            turn.release()
            yield value
    finally:
        stop.set()
        thread.join(_JOIN_SECONDS)
        sys.setswitchinterval(switch)
