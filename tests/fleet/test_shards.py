"""``--jobs N``: the same document as one process, including the tracker's capture-wide rules."""

from __future__ import annotations

import numpy as np
import pytest

from rstscope.connections import Tracker, retire
from rstscope.fleet import shards
from rstscope.packets import PACKET_DTYPE
from tests.fleet.conftest import document, rstscope, without_added


@pytest.mark.parametrize("jobs", ["2", "3"])
def test_jobs_equal_single_process(jobs, short_pieces, sample_pieces):
    for pieces in (short_pieces, sample_pieces):
        single = document(str(pieces[0].parent), "--jobs", "1")
        parallel = document(str(pieces[0].parent), "--jobs", jobs)
        assert parallel == single


def test_jobs_equal_whole_file_under_pressure(busy_pieces, monkeypatch):
    whole_path, pieces = busy_pieces
    pressured = []
    original = retire.IdleSweep.pressured

    def spy(*args, **kwargs):
        slots = original(*args, **kwargs)
        pressured.append(len(slots))
        return slots

    monkeypatch.setattr(retire.IdleSweep, "pressured", staticmethod(spy))
    whole = document(str(whole_path))
    assert sum(pressured) > 0, "the capture must make the tracker retire under pressure"
    monkeypatch.undo()
    parallel = document(str(pieces[0].parent), "--jobs", "2")
    assert without_added(parallel["resets"]) == whole["resets"]
    assert without_added(parallel["connections"]) == whole["connections"]
    assert parallel["summary"] == whole["summary"]


def test_stitched_single_process_equals_whole_file(busy_pieces):
    whole_path, pieces = busy_pieces
    whole = document(str(whole_path))
    stitched = document(str(pieces[0].parent), "--jobs", "1")
    assert without_added(stitched["resets"]) == whole["resets"]
    assert without_added(stitched["connections"]) == whole["connections"]


def test_schedule_is_the_single_process_clock(busy_pieces, tmp_path, monkeypatch):
    """The slices computed from the pieces are the ones the tracker sweeps at in the stitched single-process
    run (chunks of CHUNK_PACKETS records: stitch.Rebatcher)."""
    _, pieces = busy_pieces
    sweeps = []
    original = Tracker._retire_idle

    def spy(self, now_frame, now_ns):
        sweeps.append((now_frame, now_ns))
        return original(self, now_frame, now_ns)

    monkeypatch.setattr(Tracker, "_retire_idle", spy)
    document(str(pieces[0].parent), "--jobs", "1")
    offsets, offset = [], 0
    for i, p in enumerate(pieces):
        offsets.append(offset)
        offset += shards.decode_piece(str(p), i, 1, str(tmp_path)).stats.records
    for block in (shards.CLOCK_BLOCK, 1_000):  # the schedule does not depend on how the clocks are cut
        monkeypatch.setattr(shards, "CLOCK_BLOCK", block)
        sched = shards.schedule(b for i, at in enumerate(offsets) for b in shards._clock(str(tmp_path), i, at))
        assert len(sched) > 5
        assert list(zip(sched.now_frame.tolist(), sched.now_ns.tolist(), strict=True)) == sweeps


def test_jobs_other_outputs_equal_single_process(busy_pieces, tmp_path):
    """The text summary, the CSV and Parquet read the connections back as objects (made in the parent from
    the rows the shards wrote), not the rows the shards encoded for --json."""
    pq = pytest.importorskip("pyarrow.parquet")
    _, pieces = busy_pieces
    directory = str(pieces[0].parent)
    for output in (["--all"], ["--csv"]):
        single = rstscope("analyze", directory, "--jobs", "1", *output)
        parallel = rstscope("analyze", directory, "--jobs", "2", *output)
        assert single[0] == parallel[0] == 0, parallel[2]
        assert parallel[1] == single[1]
    outs = {}
    for jobs in ("1", "2"):
        out = tmp_path / f"pq-{jobs}"
        status, _, err = rstscope("analyze", directory, "--jobs", jobs, "--parquet", str(out), "--summary-only")
        assert status == 0, err
        outs[jobs] = {p.relative_to(out): pq.read_table(p).to_pylist() for p in sorted(out.rglob("*.parquet"))}
    assert outs["2"] == outs["1"] and outs["1"]


def test_jobs_with_several_captures_in_a_group(short_pieces):
    """Pieces split into several captures by --max-gap: each capture's shard files are its own."""
    directory = str(short_pieces[0].parent)
    single = document(directory, "--jobs", "1", "--max-gap", "0")
    assert len(single["captures"]) > 1
    assert document(directory, "--jobs", "2", "--max-gap", "0") == single


def _rows(src: tuple, dst: tuple, tunnel=0):
    """Packet rows from (address low 64 bits, port) arrays of each endpoint."""
    rows = np.zeros(len(src[0]), dtype=PACKET_DTYPE)
    rows["src_lo"], rows["src_port"] = src
    rows["dst_lo"], rows["dst_port"] = dst
    rows["tunnel_id"] = tunnel
    return rows


def test_shard_of_is_symmetric_and_balanced_on_a_busy_server():
    """Both directions of a connection land in one shard, and a server's clients split evenly: a biased
    split makes the lockstep shards wait for the larger one.  The keys are a real busy server's (few
    client addresses, consecutive ports, IPv4-mapped as the reader stores them).  20,000 connections:
    an even hash is within 0.4 % of half (one standard deviation); the bound below is 2 %."""
    n = 20_000
    mapped = np.uint64(0xFFFF00000000)
    client = (mapped | np.uint64(0x0A000101) + np.arange(n, dtype=np.uint64) // 5000 * 256,
              1024 + np.arange(n, dtype=np.uint16))  # fmt: skip
    server = (np.full(n, mapped | np.uint64(0x0A640001), dtype=np.uint64), np.full(n, 80, dtype=np.uint16))
    there, back = shards.shard_of(_rows(client, server), 2), shards.shard_of(_rows(server, client), 2)
    assert (there == back).all()
    assert abs(np.count_nonzero(there == 0) - n / 2) < 0.02 * n
    by_three = np.bincount(shards.shard_of(_rows(client, server, tunnel=7), 3), minlength=3)
    assert (abs(by_three - n / 3) < 0.02 * n).all()


def test_jobs_leave_no_files_behind(short_pieces, tmp_path, monkeypatch):
    """The work directory (shard rows, clocks, shared evidence, claims, results) is gone after the run."""
    import tempfile

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    document(str(short_pieces[0].parent), "--jobs", "2")
    # pymp-*: multiprocessing's own (the forkserver's socket), removed when this process exits
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith("pymp-")] == []
