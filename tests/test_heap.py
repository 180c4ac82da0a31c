"""rstscope.heap: the C heap's free pages go back to the system when a stage has freed them."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rstscope import heap

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


@pytest.mark.skipif(heap._malloc_trim() is None, reason="no malloc_trim here (not glibc): give_back does nothing")
def test_freed_blocks_below_a_live_one_are_given_back():
    out = subprocess.run([sys.executable, "-c", FRAGMENTED], capture_output=True, text=True, check=True).stdout
    before, after = map(float, out.split())
    assert before - after > 48  # most of the 64 MB left resident by the free blocks is given back
