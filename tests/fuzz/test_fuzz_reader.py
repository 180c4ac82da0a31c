"""Property test: mutated valid captures give InputError or clean iteration, never anything else."""

from __future__ import annotations

import gzip
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from fuzz_support import check_bytes, seed_files
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SEEDS = {p.name: p.read_bytes() for p in seed_files()}
PLAIN_SEEDS = sorted(name for name in SEEDS if not name.endswith(".gz"))
INTERESTING_U32 = [0, 1, 7, 12, 13, 16, 32, 65535, 65536, 262144, 262145, 0x7FFF_FFFF, 0xFFFF_FFFF, 16 << 20]


@st.composite
def mutated_capture(draw) -> bytes:
    data = bytearray(SEEDS[draw(st.sampled_from(PLAIN_SEEDS))])
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["truncate", "byte", "u32", "delete", "duplicate", "zero-record"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "truncate":
            del data[pos:]
        elif kind == "byte" and data:
            data[pos] = draw(st.integers(0, 255))
        elif kind == "u32" and len(data) >= 4:
            # a length field set to an edge value: caplen, block length, option length, ...
            pos = min(pos, len(data) - 4)
            order = draw(st.sampled_from("<>"))
            data[pos : pos + 4] = struct.pack(order + "I", draw(st.sampled_from(INTERESTING_U32)))
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 64))]
        elif kind == "duplicate":
            data[pos:pos] = data[pos : pos + draw(st.integers(1, 64))]
        elif kind == "zero-record":
            # a classic-pcap record header with caplen 0 (and a random wire length)
            data[pos:pos] = struct.pack("<IIII", 0, 0, 0, draw(st.integers(0, 2000)))
    if draw(st.booleans()) and draw(st.integers(0, 9)) == 0:
        data = bytearray(gzip.compress(bytes(data), mtime=0))
    return bytes(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=mutated_capture(), chunk=st.sampled_from([1, 3, 1000]))
def test_mutated_captures(tmp_path, data, chunk):
    check_bytes(data, tmp_path / "fuzz.bin", chunk_packets=chunk)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(head=st.sampled_from([b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x0a\x0d\x0d\x0a", b"\x1f\x8b"]),
       body=st.binary(max_size=600))  # fmt: skip
def test_random_bytes_after_a_valid_magic(tmp_path, head, body):
    check_bytes(head + body, tmp_path / "fuzz.bin")


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_every_prefix_of_every_seed(tmp_path, name):
    data = SEEDS[name]
    step = max(1, len(data) // 150)
    for cut in range(0, len(data), step):
        check_bytes(data[:cut], tmp_path / "cut.bin")


# ---------------------------------------------------------------- the atheris harness, briefly

ATHERIS_HARNESS = Path(__file__).with_name("atheris_reader.py")


def test_atheris_harness_runs_clean(tmp_path):
    pytest.importorskip("atheris", reason="atheris is not installed (pip install atheris; Linux, CPython)")
    env = dict(
        os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]), RSTSCOPE_FUZZ_INPUT=str(tmp_path / "in")
    )
    result = subprocess.run(
        [sys.executable, str(ATHERIS_HARNESS), "-max_total_time=20", "-timeout=5", f"-artifact_prefix={tmp_path}/"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    tail = "\n".join(result.stderr.splitlines()[-30:])
    assert result.returncode == 0, tail
    assert "Done" in result.stderr, tail
