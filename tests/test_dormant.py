"""Dormant connections (rstscope/connections/dormant.py): open connections that went idle leave memory
and come back, unchanged, when their 4-tuple sends again."""

from __future__ import annotations

import os
import sys
import tempfile

import numpy as np
import pytest

from rstscope import scratch
from rstscope.connections import dormant, retire, tracker
from tests import differential, shortconns, tracker_reference


@pytest.mark.parametrize("region_bytes", [1 << 40, 16_384], ids=["compacted", "recycled"])
def test_dormant_connections_come_back_as_they_were(tmp_path, monkeypatch, region_bytes):
    """Whether the records' files are compacted (regions too large to be freed) or write over the regions
    with nothing alive (small ones), every connection comes back as it was."""
    sys.path.insert(0, str(differential.REPO / "benchmarks"))
    import shapes

    path = tmp_path / "flood.pcap"
    shapes.generate(path, shapes.SHAPES["flood"], 3_000)  # half-open handshakes, SYN-ACKs retransmitted later
    with monkeypatch.context() as m:
        m.setattr(tracker.Tracker, "_sleep", lambda self, slots: None)  # open connections stay in memory
        with_nothing_dormant = tracker_reference.tracker_digest(path, chunk_packets=4096)
    monkeypatch.setattr(tracker, "DORMANT_AFTER_FRAMES", 300)  # the threshold changes no result: try a small one
    monkeypatch.setattr(retire, "SPILL_BATCH", 50)  # dormant rows go to the file...
    monkeypatch.setattr(dormant, "COMPACT_AFTER", 100)  # ... which is compacted
    woken, slept = [], []
    sleep, wake = tracker.Tracker._sleep, tracker.Tracker._wake

    def spy_sleep(self, slots):
        slept.append(len(slots))
        sleep(self, slots)
        assert len(self._dormant) == len(self._dormant.ids())  # the count kept agrees with the id map

    def spy_wake(self, ids):
        woken.append(len(ids))
        wake(self, ids)
        assert len(self._dormant) == len(self._dormant.ids())

    compactions, files = [], []
    compact, new_files = dormant.Dormant._compact, dormant.Dormant._new_files
    monkeypatch.setattr(dormant.Dormant, "_compact", lambda self: compactions.append(1) or compact(self))

    def spy_new_files(self):
        new_files(self)
        files.extend([self._rows, self._recent, self._probes])

    monkeypatch.setattr(dormant.Dormant, "_new_files", spy_new_files)
    monkeypatch.setattr(retire, "REGION_BYTES", region_bytes)
    monkeypatch.setattr(tracker.Tracker, "_sleep", spy_sleep)
    monkeypatch.setattr(tracker.Tracker, "_wake", spy_wake)
    with_dormancy = tracker_reference.tracker_digest(path, chunk_packets=4096)
    assert sum(slept) > 500 and sum(woken) > 500  # many went dormant, and many came back (besides the end)
    reused = sum(f.regions_reused for f in files)
    assert reused if region_bytes < 1 << 30 else (compactions and not reused)
    assert with_dormancy == with_nothing_dormant


def _can_punch_holes(directory) -> bool:
    """Whether the file system of ``directory`` gives back the blocks of a hole (ext4, xfs, btrfs, tmpfs do)."""
    with tempfile.TemporaryFile(dir=directory) as f:
        f.write(b"x" * 65_536)
        f.flush()
        os.fsync(f.fileno())
        retire._punch_hole(f.fileno(), 0, 65_536)
        return os.fstat(f.fileno()).st_blocks * 512 < 65_536


def test_released_regions_become_holes_and_live_rows_read_back(monkeypatch):
    """Rows released: a region of the file with nothing alive gives its blocks back; every row still alive
    reads back unchanged, also those in a block a hole's region shares with its neighbour (regions are
    not aligned to blocks, rows straddle them)."""
    monkeypatch.setattr(retire, "REGION_BYTES", 3 * 4096 + 100)  # 119 rows of 104 bytes: 12,376 bytes
    dtype = np.dtype([("v", np.int64, (13,))])
    n = 20_000
    rows = np.zeros(n, dtype)
    rows["v"] = np.arange(n)[:, None] * 13 + np.arange(13)
    records = retire.RecordFile(dtype)
    for start in range(0, n, 1_000):
        records.append(rows[start : start + 1_000])
    region = records._region_rows
    alive = np.ones(n, dtype=bool)
    alive[: 40 * region] = False  # forty regions, all in the file
    alive[41 * region : 42 * region : 2] = False  # half of one region: not a hole
    alive[n - 100 :] = False  # the last rows, some still in memory: the last region is not whole
    records.release(np.flatnonzero(~alive)[::-1])  # in any order
    assert records.dead_kept == int((~alive).sum()) - 40 * region
    assert np.array_equal(records.take(np.flatnonzero(alive)), rows[alive])
    if not _can_punch_holes(scratch.directory() or tempfile.gettempdir()):
        pytest.skip("the temporary directory's file system keeps the blocks of holes (no fallocate)")
    records._file.flush()
    on_disk = os.fstat(records._file.fileno()).st_blocks * 512
    assert on_disk <= len(records) * dtype.itemsize - 40 * (region * dtype.itemsize - 2 * 4096)


def test_released_regions_are_written_over_and_live_rows_read_back(monkeypatch):
    """A table read in any order (the dormant records') writes new rows over the regions whose rows were
    all released, not at the end of its file: the file stays as large as what is alive at once, and
    every live row reads back unchanged, wherever its region went."""
    monkeypatch.setattr(retire, "REGION_BYTES", 3 * 4096 + 100)
    monkeypatch.setattr(retire, "SPILL_BATCH", 700)  # flushes end inside regions
    dtype = np.dtype([("v", np.int64, (13,))])
    records = retire.RecordFile(dtype, run_page_bytes=1_000)  # 9-row pages: 117-row regions
    region, rng = records._region_rows, np.random.default_rng(3)
    assert region % records._run_rows == 0
    alive: dict[int, int] = {}  # position -> value
    for step in range(60):
        start = records.append(np.array([(np.full(13, step * 1_000 + i),) for i in range(500)], dtype))
        alive.update((start + i, step * 1_000 + i) for i in range(500))
        old = np.array(sorted(alive))[: max(0, len(alive) - 3 * region)]  # the oldest die: FIFO, as records do
        gone = np.concatenate([old, rng.choice(np.array(sorted(alive)), 5, replace=False)])
        gone = np.unique(gone)
        records.release(gone)
        for p in gone.tolist():
            del alive[p]
        positions = np.array(sorted(alive))
        assert np.array_equal(records.take(positions)["v"][:, 0], [alive[p] for p in positions.tolist()])
    assert records.regions_reused > 100
    records._file.flush()
    assert os.fstat(records._file.fileno()).st_size <= 12 * region * dtype.itemsize  # not 60 x 500 rows


def test_dormant_rows_keep_the_whole_slot():
    """Every per-slot column of the sequence pass is kept (a column added there is kept too): a record
    holds the slot's whole row of the carried table."""
    from rstscope.connections.dormant import Dormant
    from rstscope.connections.sequence import ConnArrays

    table = Dormant(np.dtype([("id", np.int64)])).dtype["table"]
    assert table.shape == (len(ConnArrays.INT_COLUMNS),) and table.base == ConnArrays().table.dtype


def _short_connections_with_late_segments(path, connections: int = 4_000) -> None:
    """Short connections; every 7th one's last segment comes again 30 ms later (a retransmission or an
    echo after the close): whether it joins its connection or starts a new one depends on whether the
    connection had retired by then, so the records show when each connection retired."""
    rng = np.random.default_rng(5)
    cols = shortconns.connections_table(shortconns.short_mix(rng, connections), shortconns.TEMPLATES, rng)
    order = np.lexsort((cols["ts"], cols["conn"]))
    last = order[np.r_[cols["conn"][order][1:] != cols["conn"][order][:-1], True]]
    again = last[cols["conn"][last] % 7 == 0]
    for key in cols:
        cols[key] = np.concatenate([cols[key], cols[key][again] + (30_000_000 if key == "ts" else 0)])
    in_time = np.argsort(cols["ts"], kind="stable")
    shortconns.write_pcap(str(path), {k: v[in_time] for k, v in cols.items()})


@pytest.mark.parametrize("compacted", [False, True], ids=["files-kept", "files-compacted"])
def test_closed_connections_retire_from_dormancy_as_from_a_slot(tmp_path, monkeypatch, compacted):
    """In a reset storm, closed connections past CLOSED_DORMANT_ABOVE go dormant too; the idle and pressure
    sweeps still retire them when they would have retired from a slot, so no record changes; also when the
    records' files are compacted under them (their records move)."""
    path = tmp_path / "late.pcap"
    _short_connections_with_late_segments(path)
    # A storm in miniature: pressure retirement past 100 closed connections idle 300 frames and 2 ms.
    monkeypatch.setattr(retire, "PRESSURE_IDLE_FRAMES", 300)
    monkeypatch.setattr(retire, "PRESSURE_IDLE_NS", 2_000_000)
    monkeypatch.setattr(tracker, "DORMANT_AFTER_FRAMES", 200)
    monkeypatch.setattr(dormant, "CLOSED_DORMANT_ABOVE", 10**9)
    monkeypatch.setattr(retire, "LIVE_CLOSED_LIMIT", 10**9)
    never_pressured = tracker_reference.tracker_digest(path, chunk_packets=1024)
    monkeypatch.setattr(retire, "LIVE_CLOSED_LIMIT", 100)
    in_slots = tracker_reference.tracker_digest(path, chunk_packets=1024)
    assert in_slots != never_pressured  # the capture shows when connections retire

    monkeypatch.setattr(dormant, "CLOSED_DORMANT_ABOVE", 50)
    monkeypatch.setattr(retire, "SPILL_BATCH", 50)  # dormant rows go to the file too
    retired_dormant = []
    retire_dormant = tracker.Tracker._retire_dormant

    def spy(self, ids):
        retired_dormant.append(len(ids))
        retire_dormant(self, ids)

    monkeypatch.setattr(tracker.Tracker, "_retire_dormant", spy)
    compactions = []
    if compacted:
        monkeypatch.setattr(retire, "REGION_BYTES", 1 << 40)  # no region is freed: dead rows stay...
        monkeypatch.setattr(dormant, "COMPACT_AFTER", 64)  # ... and are soon compacted
        compact = dormant.Dormant._compact
        monkeypatch.setattr(dormant.Dormant, "_compact", lambda self: compactions.append(1) or compact(self))
    from_dormancy = tracker_reference.tracker_digest(path, chunk_packets=1024)
    assert sum(retired_dormant) > 1_000  # many closed connections retired from dormancy, not from a slot
    assert len(compactions) > 2 if compacted else not compactions
    assert from_dormancy == in_slots


def _storm_in_miniature(tmp_path, monkeypatch):
    """Short connections with late segments, under the pressure rule past 100 closed connections idle 300
    frames and 2 ms, and dormancy past 200 frames (closed ones too past 50): a capture of a storm's shape."""
    path = tmp_path / "late.pcap"
    _short_connections_with_late_segments(path)
    monkeypatch.setattr(retire, "PRESSURE_IDLE_FRAMES", 300)
    monkeypatch.setattr(retire, "PRESSURE_IDLE_NS", 2_000_000)
    monkeypatch.setattr(retire, "LIVE_CLOSED_LIMIT", 100)
    monkeypatch.setattr(tracker, "DORMANT_AFTER_FRAMES", 200)
    monkeypatch.setattr(dormant, "CLOSED_DORMANT_ABOVE", 50)
    return path


def test_a_storm_slice_is_tracked_in_parts_with_no_record_changed(tmp_path, monkeypatch):
    """Past LIVE_CLOSED_LIMIT closed connections, a slice is tracked in parts of STORM_PART_ROWS rows and
    idle connections go dormant between them: fewer slots at once (each new connection of a slice needs
    one), the same records as a slice tracked whole (tracking is the same whatever the parts; dormancy
    changes no result)."""
    path = _storm_in_miniature(tmp_path, monkeypatch)
    used, parts = [], []
    finish, track = tracker.Tracker.finish, tracker.Tracker._track

    def spy_finish(self):
        used.append(self._arrays.size)  # slots ever used at once (freed ones are reused)
        return finish(self)

    def spy_track(self, piece):
        parts.append(len(piece.rows))
        return track(self, piece)

    monkeypatch.setattr(tracker.Tracker, "finish", spy_finish)
    monkeypatch.setattr(tracker.Tracker, "_track", spy_track)
    monkeypatch.setattr(tracker, "STORM_PART_ROWS", 10**9)
    whole = tracker_reference.tracker_digest(path, chunk_packets=4096)
    slices = len(parts)
    monkeypatch.setattr(tracker, "STORM_PART_ROWS", 256)
    in_parts = tracker_reference.tracker_digest(path, chunk_packets=4096)
    assert len(parts) - slices > 4 * slices  # most slices were tracked in parts of 256 rows
    assert used[1] < 0.75 * used[0]  # fewer slots at once (measured: 515 instead of 950)
    assert in_parts == whole


def test_under_pressure_only_a_slice_that_starts_many_connections_is_tracked_in_parts(tmp_path, monkeypatch):
    """Parts are for slices that may start more than STORM_PART_ROWS connections (RSTs and SYNs without ACK):
    a slice of short connections (one SYN in about ten rows) is tracked whole under the same pressure, a
    slice of bare RSTs in parts; the records are the same either way."""
    path = _storm_in_miniature(tmp_path, monkeypatch)
    parts, pressed = [], []
    track, feed = tracker.Tracker._track, tracker.Tracker._feed

    def spy_feed(self, piece):
        pressed.append(self._sweep.pressing(self._closed_kept))
        return feed(self, piece)

    monkeypatch.setattr(tracker.Tracker, "_feed", spy_feed)
    monkeypatch.setattr(
        tracker.Tracker, "_track", lambda self, piece: parts.append(len(piece.rows)) or track(self, piece)
    )
    monkeypatch.setattr(tracker, "STORM_PART_ROWS", 10**9)
    whole = tracker_reference.tracker_digest(path, chunk_packets=4096)
    monkeypatch.setattr(tracker, "STORM_PART_ROWS", 1_024)  # more than a 4,096-row slice's ~400 SYNs and RSTs
    parts.clear(), pressed.clear()
    few_starts = tracker_reference.tracker_digest(path, chunk_packets=4096)
    assert sum(pressed) > len(pressed) // 2  # most slices were under pressure...
    assert len(parts) == len(pressed)  # ... and each was tracked whole
    assert few_starts == whole

    rows = np.zeros(4_096, dtype=[("flags", np.uint16)])
    rows["flags"] = shortconns.RST
    assert tracker._storming(rows["flags"])  # bare RSTs: 4,096 connections may start
    rows["flags"][::2] = shortconns.SYN | shortconns.ACK  # SYN-ACKs start none
    rows["flags"][1::4] = shortconns.ACK
    assert not tracker._storming(rows["flags"])  # 1,024 RSTs: not more than STORM_PART_ROWS
    rows["flags"][1::4] = shortconns.SYN
    assert tracker._storming(rows["flags"])  # and 1,024 SYNs more


def test_record_file_reads_rows_in_any_order(monkeypatch):
    """A RecordFile read by runs of pages (``run_page_bytes``, as the dormant records are) gives back the rows asked
    for, from the file and from memory, in any order and repeated."""
    monkeypatch.setattr(retire, "SPILL_BATCH", 64)
    dtype = np.dtype([("a", np.int64), ("b", np.int8, 3), ("c", np.uint64)])
    rng = np.random.default_rng(3)
    rows = np.zeros(1_000, dtype)
    rows["a"] = rng.integers(-(2**62), 2**62, len(rows))
    rows["b"] = rng.integers(-128, 128, (len(rows), 3))
    rows["c"] = np.arange(len(rows))
    for page_rows in (1, 3, 16, None):
        records = retire.RecordFile(dtype, run_page_bytes=None if page_rows is None else page_rows * dtype.itemsize)
        for start in range(0, len(rows), 37):  # appended in uneven parts: flushed at SPILL_BATCH rows
            records.append(rows[start : start + 37])
        assert 0 < records._written < len(rows)  # some rows in the file, some still in memory
        for positions in (rng.integers(0, len(rows), 300), np.arange(len(rows))[::-1], np.array([5, 5, 999, 0]),
                          np.zeros(0, dtype=np.int64)):  # fmt: skip
            assert records.take(positions).tobytes() == rows[positions].tobytes()


def test_record_file_reads_runs_of_rows(monkeypatch):
    """``RecordFile.take_runs`` gives each run of rows whole (as the squeezed dormant records are read): runs
    across pages and across regions written apart, from the file and from memory."""
    monkeypatch.setattr(retire, "SPILL_BATCH", 64)
    monkeypatch.setattr(retire, "REGION_BYTES", 96 * 16)  # regions of 96 rows: runs cross them
    dtype = np.dtype([("a", np.int64), ("b", np.uint64)])
    rows = np.zeros(1_000, dtype)
    rows["a"], rows["b"] = np.arange(len(rows)), np.arange(len(rows)) * 7
    rng = np.random.default_rng(4)
    for page_rows in (1, 8, 32, None):
        records = retire.RecordFile(dtype, run_page_bytes=None if page_rows is None else page_rows * dtype.itemsize)
        for start in range(0, len(rows), 37):
            records.append(rows[start : start + 37])
        records.release(np.arange(96))  # the first region written over by the rows after
        records.append(rows[:200])
        expected = np.concatenate([rows, rows[:200]])
        for last in (len(expected) - 1, records._written - 1):  # with and without rows still in memory
            count = rng.integers(1, 12, 60)
            first = np.minimum(rng.integers(96, last, 60), last + 1 - count)
            got, at = records.take_runs(first, count)
            for f, c, a in zip(first, count, at, strict=True):
                assert got[a : a + c].tobytes() == expected[f : f + c].tobytes()


@pytest.mark.parametrize("kind", ["usual", "random", "unlike"])
def test_squeezed_records_read_back_as_they_were(monkeypatch, kind):
    """Dormant records are squeezed (the words that differ from the usual ones, after a bitmap of which) and
    come back byte for byte: records like the usual ones (a bitmap alone), with some words different, and
    with every word different (the longest)."""
    monkeypatch.setattr(retire, "SPILL_BATCH", 500)
    store = dormant.Dormant(np.dtype([("id", np.int64), ("port", np.uint16), ("flag", np.int8)]))
    words = store.dtype.itemsize // 8
    rng = np.random.default_rng(6)
    usual = rng.integers(0, 2**64, words, dtype=np.uint64)
    batches = []
    for batch, n in enumerate([700] * 5 + [10]):  # the last one stays in memory
        values = np.repeat(usual[None, :], n, axis=0)
        if kind != "usual":
            differ = rng.random(values.shape) < (0.3 if kind == "random" else 1.0)
            values[differ] = rng.integers(0, 2**64, int(differ.sum()), dtype=np.uint64)
        if batch == 0:
            values[0] = usual  # the first batch decides the usual values: most of its records hold these
            values[1:] = np.where(rng.random((699, words)) < 0.5, usual, values[1:])
        batches.append(values.view(store.dtype).ravel())
        first, span = store._squeezed_into_file(batches[-1])
        batches[-1] = (batches[-1].copy(), first, span)
    assert store._usual is not None and 0 < store._rows._written < len(store._rows)  # in the file and in memory
    expected_span = {"usual": 1, "unlike": -(-(-(-words // 64) + words) // 8)}.get(kind)
    for k, (records, first, span) in enumerate(batches):
        if expected_span is not None and k:  # (the first batch is half usual words, by construction)
            assert (span == expected_span).all()
        back = store._expanded(*store._rows.take_runs(first, span))
        assert back.tobytes() == records.tobytes()


def test_packed_rows_equal_rows_set_field_by_field():
    """``retire.packed`` (fields copied as bytes, cast to the field's type; ``head``: the first bytes) makes the
    rows that setting each field of a zeroed structured array makes."""
    dtype = np.dtype([("id", np.int64), ("port", np.int64), ("flag", np.int8), ("pair", np.int64, 2),
                      ("hist", np.int8, 4), ("rest", np.int64)])  # fmt: skip
    head = np.zeros(3, np.dtype([("id", np.int64), ("port", np.int64)]))
    head["id"], head["port"] = [7, 8, 9], [80, 443, 65535]
    fields = {"flag": np.array([True, False, True]), "pair": np.arange(6).reshape(3, 2),
              "hist": np.array([[1, 2, 3, 4]] * 3, dtype=np.int64)}  # fmt: skip
    expected = np.zeros(3, dtype)
    expected["id"], expected["port"] = head["id"], head["port"]
    for name, values in fields.items():
        expected[name] = values
    assert retire.packed(dtype, 3, fields, head=head).tobytes() == expected.tobytes()
