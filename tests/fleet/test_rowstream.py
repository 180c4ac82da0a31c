"""A shard's encoded rows through shared memory to the parent (:mod:`rstscope.fleet.rowstream`), and what
happens when a streaming shard or the document it streams to fails."""

from __future__ import annotations

import io
import multiprocessing
import os

import numpy as np
import pytest

from rstscope import columns
from rstscope.fleet import merge, rowstream, shards
from tests.fleet.conftest import document, rstscope

RING = 32 << 10


def _blocks(seed: int) -> list[tuple[bytes, np.ndarray]]:
    """Blocks of rows of random lengths: small ones, one of no rows, ones that wrap the ring, and one
    larger than half the ring (sent through the pipe)."""
    rng = np.random.default_rng(seed)
    out = []
    for rows in [3, 0, 40, 17, 1, 60, 30, 5, 400, 2, 50, 45, 55, 35, 25]:
        lengths = rng.integers(1, 400, rows)
        data = rng.integers(0, 256, int(lengths.sum()), dtype=np.uint8).tobytes()
        out.append((data, lengths))
    return out


def _send(conn, seed: int, die_after: int | None) -> None:
    sender = rowstream.Sender(conn, ring_bytes=RING)
    sender.result({"shard": seed})
    for k, (data, lengths) in enumerate(_blocks(seed)):
        if k == die_after:
            os._exit(3)
        sender.block(data, lengths)
    sender.end(("tally", seed))
    conn.close()


def _start(seed: int, die_after: int | None = None):
    ctx = multiprocessing.get_context("fork")
    ours, theirs = ctx.Pipe()
    proc = ctx.Process(target=_send, args=(theirs, seed, die_after))
    proc.start()
    theirs.close()
    return proc, ours


@pytest.mark.parametrize("take", [1, 7, 64, 1000])
def test_rows_arrive_whole_and_in_order_whatever_the_parent_takes_at_once(take):
    blocks = _blocks(1)
    in_ring = [len(d) for d, _ in blocks if len(d) <= RING // 2]
    assert len(in_ring) < len(blocks) and sum(in_ring) > 2 * RING  # one through the pipe; the ring wraps
    proc, conn = _start(1)
    receiver = rowstream.Receiver(conn, fail=lambda exc: pytest.fail(f"the stream ended: {exc}"))
    assert receiver.result() == {"shard": 1}
    want_lengths = np.concatenate([lengths for _, lengths in blocks])
    want = b"".join(data for data, _ in blocks)
    got, got_lengths, left = [], [], len(want_lengths)
    while left:
        parts = []
        lengths = receiver.take(min(take, left), parts)
        got.append(b"".join(parts))
        del parts
        receiver.release()  # the ring's room back: the parts were copied
        got_lengths.append(lengths)
        left -= len(lengths)
    nothing = []
    assert len(receiver.take(0, nothing)) == 0 and nothing == []
    assert b"".join(got) == want
    assert np.concatenate(got_lengths).tolist() == want_lengths.tolist()
    assert receiver.finish() == ("tally", 1)
    proc.join(10)
    assert proc.exitcode == 0


def test_a_sender_that_dies_midway_is_the_failure_it_reports():
    proc, conn = _start(2, die_after=4)
    reasons = []

    def fail(exc):
        reasons.append(exc)
        raise RuntimeError("the shard's own error")

    receiver = rowstream.Receiver(conn, fail=fail)
    receiver.result()
    sent = sum(len(lengths) for _, lengths in _blocks(2)[:4])
    parts = []
    receiver.take(sent, parts)  # what it sent before it died is whole
    assert b"".join(parts) == b"".join(data for data, _ in _blocks(2)[:4])
    del parts
    receiver.release()
    with pytest.raises(RuntimeError, match="the shard's own error"):
        receiver.take(1, [])
    assert isinstance(reasons[0], (EOFError, ConnectionResetError))  # reset: it left our releases unread
    proc.join(10)
    assert proc.exitcode == 3


def test_a_sender_that_dies_before_its_result():
    ctx = multiprocessing.get_context("fork")
    ours, theirs = ctx.Pipe()
    proc = ctx.Process(target=os._exit, args=(4,))
    proc.start()
    theirs.close()
    with pytest.raises(rowstream.Ended):
        rowstream.Receiver(ours, fail=lambda exc: None).result()
    proc.join(10)


# -- through the command -----------------------------------------------------------------------------


@pytest.fixture
def forked_shards(monkeypatch, tmp_path):
    """Shards forked from this process (not the forkserver's clean ones), so that what a test plants in
    it runs in them; temporary files in ``tmp_path``."""
    import tempfile

    ctx = multiprocessing.get_context("fork")

    def init(self, jobs):
        self.shards, self.ctx = jobs, ctx

    monkeypatch.setattr(shards.LocalEngine, "__init__", init)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def _left(tmp_path) -> list[str]:
    return [p.name for p in tmp_path.iterdir() if not p.name.startswith("pymp-")]


def test_streamed_document_equals_the_files_one(short_pieces, forked_shards, monkeypatch):
    """The last capture streams (``--json`` alone); with streaming off the shards write files, and the
    documents are the same, as is the one process's."""
    directory = str(short_pieces[0].parent)
    streamed = document(directory, "--jobs", "2")
    monkeypatch.setattr(shards.LocalEngine, "streams", False)
    assert document(directory, "--jobs", "2") == streamed == document(directory, "--jobs", "1")
    assert _left(forked_shards) == [] and multiprocessing.active_children() == []


def test_a_shard_failing_while_it_streams_is_one_line_and_stops_the_others(short_pieces, forked_shards, monkeypatch):
    original = rowstream.Sender.block

    def planted(self, data, lengths):
        original(self, data, lengths)
        raise RuntimeError("planted after a block")

    monkeypatch.setattr(rowstream.Sender, "block", planted)
    status, _out, err = rstscope("analyze", "--json", str(short_pieces[0].parent), "--jobs", "2")
    assert status != 0
    assert err.count("\n") == 1 and "planted after a block" in err, err
    assert multiprocessing.active_children() == []
    assert _left(forked_shards) == []


def test_a_document_that_cannot_be_written_stops_the_streaming_shards(short_pieces, forked_shards, monkeypatch):
    """The output fails after the document's head (a full disk, a closed pipe): the shards waiting to hand
    over their rows are stopped and their work directory removed."""
    # Small blocks, a small ring, small batches in the parent: the shards wait for room when it fails.
    monkeypatch.setattr(rowstream, "RING_BYTES", 64 << 10)
    monkeypatch.setattr(columns, "ROWS_PER_BLOCK", 16)
    monkeypatch.setattr(merge, "BATCH", 64)
    streaming = []

    class Full(io.StringIO):
        def write(self, text):
            if '"connections": [' in self.getvalue():
                streaming.append(len(multiprocessing.active_children()))
                raise OSError(28, "No space left on device")
            return super().write(text)

    from rstscope.cli import Environment, run

    err = io.StringIO()
    status = run(["analyze", "--json", str(short_pieces[0].parent), "--jobs", "2"],
                 Environment(stdout=Full(), stderr=err, stdout_isatty=False, stderr_isatty=False))  # fmt: skip
    assert status != 0 and "No space left on device" in err.getvalue()
    assert streaming == [2]
    assert multiprocessing.active_children() == []
    assert _left(forked_shards) == []


def test_only_the_last_group_streams(short_pieces, tmp_path, monkeypatch):
    """Two hosts, two groups: the first group's shards write their rows to files (the second group is
    analysed after it), the last one's stream them; the document is the one process's."""
    import shutil

    for host in ("alpha", "beta"):
        (tmp_path / host).mkdir()
        for p in short_pieces:
            shutil.copy(p, tmp_path / host / p.name)
    argv = (str(tmp_path / "*" / "*.pcap"), "--by-host", r"/(alpha|beta)/")
    calls = []
    for name in ("track", "stream"):
        original = getattr(shards.LocalEngine, name)

        def spy(self, *args, _name=name, _original=original, **kwargs):
            calls.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(shards.LocalEngine, name, spy)
    parallel = document(*argv, "--jobs", "2")
    assert calls == ["track", "stream"]
    assert parallel == document(*argv, "--jobs", "1")
    assert [c["host"] for c in parallel["captures"]] == ["alpha", "beta"]
