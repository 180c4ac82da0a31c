"""glibc's allocator settings for ``analyze`` (rstscope/glibc.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rstscope import glibc

needs_glibc = pytest.mark.skipif(glibc.libc() is None, reason="not glibc: nothing to set")


@needs_glibc
def test_set_unless_the_environment_says_otherwise():
    """In a fresh process: set by default; left alone when the user set either variable."""
    code = "from rstscope import glibc; print(glibc.keep_freed_top())"
    for env, expected in (({}, "True"), ({"MALLOC_TOP_PAD_": "131072"}, "False"),
                          ({"MALLOC_MMAP_THRESHOLD_": "65536"}, "False")):  # fmt: skip
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**_base_env(), **env}).stdout.strip()  # fmt: skip
        assert out == expected, env


@needs_glibc
def test_large_blocks_come_from_the_heap():
    """With the settings, an 8 MB block is carved from the heap, which keeps what is freed at its top;
    by default glibc's first block of that size is a mapping of its own, unmapped when freed."""
    code = """
import ctypes, sys
from rstscope import glibc
if sys.argv[1] == "set":
    glibc.keep_freed_top()
libc = glibc.libc()
libc.malloc.restype = ctypes.c_void_p
p = libc.malloc(8 << 20)
for line in open("/proc/self/maps"):
    lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
    if lo <= p < hi:
        print(line.split()[-1] if line.split()[-1] == "[heap]" else "mapping")
"""
    where = {}
    for mode in ("set", "default"):
        out = subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True, check=True,
                             env=_base_env()).stdout.split()  # fmt: skip
        where[mode] = out[-1]
    assert where == {"set": "[heap]", "default": "mapping"}


def _base_env() -> dict:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
