"""rstscope.heap: the C heap's free pages go back to the system when a stage has freed them, and
``analyze`` keeps what it frees within a stage."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rstscope import heap

needs_glibc = pytest.mark.skipif(heap.libc() is None, reason="not glibc: the heap's settings do nothing")

FRAGMENTED = """
import sys
from rstscope import heap

def resident_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

blocks, pins = [], []
for _ in range(1_000):  # 64 MB in blocks from the C heap, each with a small live one after it
    blocks.append(bytearray(65_536))
    blocks[-1][::4096] = b"x" * 16  # touched: resident
    pins.append(bytearray(2_000))
del blocks  # free, but between live blocks: glibc keeps them (it gives back only the heap's top)
before = resident_mb()
heap.give_back()
print(before, resident_mb())
"""


@needs_glibc
def test_freed_blocks_below_a_live_one_are_given_back():
    out = subprocess.run([sys.executable, "-c", FRAGMENTED], capture_output=True, text=True, check=True).stdout
    before, after = map(float, out.split())
    assert before - after > 48  # most of the 64 MB left resident by the free blocks is given back


@needs_glibc
def test_set_unless_the_environment_says_otherwise():
    """In a fresh process: set by default; left alone when the user set either variable."""
    code = "from rstscope import heap; print(heap.keep_freed_top())"
    for env, expected in (({}, "True"), ({"MALLOC_TOP_PAD_": "131072"}, "False"),
                          ({"MALLOC_MMAP_THRESHOLD_": "65536"}, "False")):  # fmt: skip
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**_base_env(), **env}).stdout.strip()  # fmt: skip
        assert out == expected, env


@needs_glibc
def test_large_blocks_come_from_the_heap():
    """With the settings, an 8 MB block is carved from the heap, which keeps what is freed at its top;
    by default glibc's first block of that size is a mapping of its own, unmapped when freed."""
    assert _where_block_lies("p = libc.malloc(8 << 20)") == {"set": "[heap]", "default": "mapping"}


@needs_glibc
def test_a_thread_allocates_from_the_heap():
    """With the settings, a thread's blocks come from the one heap: an arena of its own would keep a top pad
    of its own free (by default glibc gives a second thread an arena mapped apart)."""
    allocate = """
import threading
libc.malloc(64)  # the main thread's arena first
got = []
thread = threading.Thread(target=lambda: got.append(libc.malloc(4096)))
thread.start()
thread.join()
p = got[0]
"""
    assert _where_block_lies(allocate) == {"set": "[heap]", "default": "mapping"}


_WHERE = """
import ctypes, sys
from rstscope import heap
if sys.argv[1] == "set":
    heap.keep_freed_top()
libc = heap.libc()
libc.malloc.restype = ctypes.c_void_p
{allocate}
for line in open("/proc/self/maps"):
    lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
    if lo <= p < hi:
        print(line.split()[-1] if line.split()[-1] == "[heap]" else "mapping")
"""


def _where_block_lies(allocate: str) -> dict[str, str]:
    """In a fresh process, with the settings ("set") and without ("default"): whether the block ``allocate``
    gets from ``libc.malloc`` (its address left in ``p``) lies in ``[heap]`` or in a mapping of its own."""
    where = {}
    for mode in ("set", "default"):
        out = subprocess.run([sys.executable, "-c", _WHERE.format(allocate=allocate), mode], capture_output=True,
                             text=True, check=True, env=_base_env()).stdout.split()  # fmt: skip
        where[mode] = out[-1]
    return where


def _base_env() -> dict:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
