"""The RSTs judged by two processes (rstscope/judging.py): this one and its reader child, the same table as
one process gives, whoever judged what, whatever became of the child."""

from __future__ import annotations

import io
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pytest

from rstscope import analysis, api, cli, judging, prefetch
from rstscope.cli import Environment
from rstscope.connections import retire
from rstscope.connections.tracker import Tracker
from rstscope.status import RstscopeError
from tests import shortconns

pytestmark = pytest.mark.skipif(not prefetch.available(), reason="needs os.fork and two CPUs")


@pytest.fixture
def capture(tmp_path, monkeypatch):
    """Short connections, about a third ending in RSTs (2,000 or so), judged in batches of 64."""
    path = tmp_path / "short.pcap"
    shortconns.generate(str(path), 6_000)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))  # where the work directories go: checked empty after
    monkeypatch.setattr(tempfile, "tempdir", None)
    monkeypatch.setattr(judging, "BATCH", 64)
    monkeypatch.setattr(judging, "SHARED_FROM", 128)
    monkeypatch.setattr(analysis, "CHUNK_PACKETS", 4096)
    return path, scratch


def _children() -> set[int]:
    """This process's children (other tests' pools and servers among them)."""
    return {child.pid for child in psutil.Process().children()}


def _document(path, monkeypatch, *, in_child: bool) -> dict:
    monkeypatch.setattr(analysis, "PREFETCH_BYTES", 0 if in_child else 1 << 60)
    doc = api.document(analysis.analyze_capture(path))
    return {key: doc[key] for key in ("resets", "connections", "listen_queue")}


def _judged_by(log, monkeypatch) -> None:
    """Every part judged appends the pid of the process that judged it to ``log``."""
    judge_part = judging.judge_part

    def spy(subjects, work, shard, part, *rest):
        with open(log, "a") as f:
            f.write(f"{os.getpid()} {part}\n")
        return judge_part(subjects, work, shard, part, *rest)

    monkeypatch.setattr(judging, "judge_part", spy)


def _pids(log) -> dict[int, int]:
    """Parts judged, by process."""
    count: dict[int, int] = {}
    for line in log.read_text().splitlines():
        pid = int(line.split()[0])
        count[pid] = count.get(pid, 0) + 1
    return count


@pytest.mark.parametrize("max_batches", [1_000, 5], ids=["batches of BATCH", "at most MAX_BATCHES"])
def test_two_processes_judge_as_one(capture, monkeypatch, tmp_path, max_batches):
    path, scratch = capture
    monkeypatch.setattr(judging, "MAX_BATCHES", max_batches)
    one = _document(path, monkeypatch, in_child=False)
    log = tmp_path / "judged"
    _judged_by(log, monkeypatch)
    before = _children()
    two = _document(path, monkeypatch, in_child=True)
    assert len(one["resets"]) > 1_000
    assert two == one
    by = _pids(log)
    connections = len({r["connection"] for r in one["resets"]})
    assert sum(by.values()) == min(-(-connections // 64), max_batches)  # each batch once
    assert len(by) == 2 and min(by.values()) > 0  # both processes judged
    assert not list(scratch.iterdir())  # the work directory is gone
    assert _children() <= before  # and the child


def _dies(self, fds):
    """The child's share, cut short: it claims the last batch and dies."""
    judging.claim(self.work, 0, self.batches - 1)
    os._exit(1)


def _fails(self, fds):
    judging.claim(self.work, 0, self.batches - 1)
    raise ValueError("a bug in the child's share")


@pytest.mark.parametrize("share", [_dies, _fails], ids=["child dies", "child fails"])
def test_the_batches_a_child_did_not_finish_are_judged_here(capture, monkeypatch, tmp_path, share):
    path, scratch = capture
    one = _document(path, monkeypatch, in_child=False)
    monkeypatch.setattr(judging.ChildJudge, "__call__", share)
    log = tmp_path / "judged"
    _judged_by(log, monkeypatch)
    assert _document(path, monkeypatch, in_child=True) == one
    assert list(_pids(log)) == [os.getpid()]  # all of it here, the claimed batch too
    assert not list(scratch.iterdir())


def test_an_interrupted_judging_leaves_nothing_behind(capture, monkeypatch):
    path, scratch = capture
    judge_part, parent = judging.judge_part, os.getpid()

    def interrupted(subjects, work, shard, part, *rest):
        if os.getpid() == parent and part == 2:
            raise KeyboardInterrupt  # Ctrl-C
        return judge_part(subjects, work, shard, part, *rest)

    monkeypatch.setattr(judging, "judge_part", interrupted)
    monkeypatch.setattr(analysis, "PREFETCH_BYTES", 0)
    before = _children()
    with pytest.raises(KeyboardInterrupt):
        analysis.analyze_capture(path)
    assert not list(scratch.iterdir())
    assert _children() <= before


@pytest.fixture
def retiring(capture, monkeypatch):
    """The same capture, its connections retiring while it is tracked (idle 4,000 frames: the rule's 100,000
    are more than the whole capture), the child given 64 of them at a time."""
    monkeypatch.setattr(retire, "STALE_AFTER_FRAMES", 4_000)
    monkeypatch.setattr(judging, "EARLY_BATCH", 64)
    monkeypatch.setattr(analysis, "READ_PACKETS", 2_048)  # the child is polled after each chunk
    return capture


def _answers(monkeypatch) -> list[tuple[str, bool]]:
    """Per early job answered, in order: its part, and whether the answer came while tracking went on
    (:meth:`~rstscope.judging.WhileTracking.poll`) or at the end (``settle``); ``"failed"`` for a failed one."""
    log: list[tuple[str, bool]] = []
    answer, poll = judging.WhileTracking._answer, judging.WhileTracking.poll
    tracking = [False]

    def spy(self):
        part, parts = self._pending[0][1], len(self._parts)
        answered = answer(self)
        log.append((part if len(self._parts) > parts else "failed", tracking[0]))
        return answered

    def polled(self):
        tracking[0] = True
        try:
            poll(self)
        finally:
            tracking[0] = False

    monkeypatch.setattr(judging.WhileTracking, "_answer", spy)
    monkeypatch.setattr(judging.WhileTracking, "poll", polled)
    return log


def test_retired_connections_are_judged_by_the_child_while_tracking(retiring, monkeypatch, tmp_path):
    path, scratch = retiring
    one = _document(path, monkeypatch, in_child=False)
    answers = _answers(monkeypatch)
    log = tmp_path / "judged"
    _judged_by(log, monkeypatch)
    feed = Tracker.feed

    def slow_feed(self, chunk):  # a slower tracker (20 ms a chunk of 2,048): the child's jobs end in time
        time.sleep(0.02)
        feed(self, chunk)

    monkeypatch.setattr(Tracker, "feed", slow_feed)
    before = _children()
    two = _document(path, monkeypatch, in_child=True)
    assert two == one
    refused = [r for r in one["resets"] if r["verdict"] == "refused"]
    assert len(refused) > 100  # their evidence reads host_ttl: judged at the end, the same
    early = [line.split() for line in log.read_text().splitlines() if " early" in line]
    assert len(early) >= 3 and os.getpid() not in {int(pid) for pid, _ in early}  # the child judged them
    assert "failed" not in [part for part, _ in answers]  # no early job read host_ttl
    assert sum(during for _, during in answers) >= 2  # answered while tracking went on
    assert not list(scratch.iterdir())
    assert _children() <= before


@pytest.mark.parametrize("shape", ["short", "flood"])
def test_benchmark_shapes_judged_while_tracking_as_in_one_process(capture, monkeypatch, tmp_path, shape):
    """The benchmark's shapes (small versions): a busy server's short connections, and a SYN flood whose
    half-open connections go dormant and retire last, out of id order (the listen queue, tallied as they
    retire, too).  The same document whoever judged what."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import shapes

    path = tmp_path / f"{shape}.pcap"
    shapes.generate(path, shapes.SHAPES[shape], 10_000)
    monkeypatch.setattr(retire, "STALE_AFTER_FRAMES", 8_000)
    monkeypatch.setattr(judging, "EARLY_BATCH", 64)
    monkeypatch.setattr(analysis, "READ_PACKETS", 2_048)
    one = _document(path, monkeypatch, in_child=False)
    answers = _answers(monkeypatch)
    two = _document(path, monkeypatch, in_child=True)
    assert two == one and len(one["resets"]) > 300
    assert len(answers) >= 2 and "failed" not in [part for part, _ in answers]
    assert one["listen_queue"]["synack_retransmitted"] > (1_000 if shape == "flood" else -1)


def _bare_rsts_then(path, *, then: int) -> None:
    """16,000 RSTs of the server, each alone on its 4-tuple (nothing else of the server to compare their TTL
    with, as it stands when they retire), then ``then`` short connections of the same server."""
    rng = shortconns.np.random.default_rng(3)
    storm = 16_000
    cols = shortconns.connections_table(["x"] * storm, {"x": shortconns.BARE_RST}, rng)
    shortconns.write_pcap(str(path), cols)
    if then:
        cols = shortconns.connections_table(shortconns.short_mix(rng, then), shortconns.TEMPLATES, rng,
                                            first_conn=storm)  # fmt: skip
        cols["ts"] += storm * 20_000
        shortconns.write_pcap(str(path), cols, mode="ab")


def _recalled(monkeypatch) -> list[tuple[int, int]]:
    """Per call of :meth:`~rstscope.judging.WhileTracking.recall`: the early jobs' parts looked at, and the
    connections dropped (to be judged again)."""
    log: list[tuple[int, int]] = []
    recall = judging.WhileTracking.recall

    def spy(self, host_ttl, first=0):
        parts = len(self._parts) - first
        dropped = recall(self, host_ttl, first)
        log.append((parts, len(dropped)))
        return dropped

    monkeypatch.setattr(judging.WhileTracking, "recall", spy)
    return log


@pytest.mark.parametrize("then", [0, 6_000], ids=["the host sends only RSTs", "the host sends more later"])
def test_resets_of_a_host_with_no_ttl_yet_are_judged_while_tracking_and_again_if_it_gets_one(
        retiring, monkeypatch, tmp_path, then):  # fmt: skip
    """A storm of bare RSTs: their origin compares each one's TTL with the host's other packets (host_ttl,
    the whole capture's).  The child judges them as the connections retire, as if the host had none; when
    the host sends more later and so has a TTL range at the end, those jobs are dropped and their
    connections judged again.  The same document as one process makes, either way."""
    path = tmp_path / "storm.pcap"
    _bare_rsts_then(path, then=then)
    one = _document(path, monkeypatch, in_child=False)
    storm = [r for r in one["resets"] if r["connection"] < 16_000]
    assert len(storm) == 16_000
    baseline = {"origin.no_ttl_baseline" in r["findings"] for r in storm}
    assert baseline == ({True} if then == 0 else {False})  # the end's host_ttl: none, or the later packets'
    answers, recalled = _answers(monkeypatch), _recalled(monkeypatch)
    log = tmp_path / "judged"
    _judged_by(log, monkeypatch)
    feed = Tracker.feed

    def slow_feed(self, chunk):  # the child's jobs end while tracking goes on
        time.sleep(0.02)
        feed(self, chunk)

    monkeypatch.setattr(Tracker, "feed", slow_feed)
    two = _document(path, monkeypatch, in_child=True)
    assert two == one
    early = [line.split() for line in log.read_text().splitlines() if " early" in line]
    assert len(early) >= 3 and os.getpid() not in {int(pid) for pid, _ in early}  # the child judged them
    assert "failed" not in [part for part, _ in answers] and sum(during for _, during in answers) >= 2
    looked_at, dropped = (sum(column) for column in zip(*recalled, strict=True))
    assert looked_at >= 3
    if then:
        assert dropped >= 3 * 64  # every early job's storm RSTs, judged again at the end
    else:
        assert dropped == 0


def fails_second(job, message: str):
    """``job`` (a job class's ``__call__``), failing the second time the child runs one (set before the child
    is forked: each process counts its own calls)."""
    calls = []

    def call(self, fds):
        calls.append(fds)
        if len(calls) == 2:
            raise ValueError(message)
        return job(self, fds)

    return call


def test_an_early_job_that_failed_leaves_its_connections_to_the_end(retiring, monkeypatch):
    path, scratch = retiring
    one = _document(path, monkeypatch, in_child=False)
    answers = _answers(monkeypatch)
    failing = fails_second(judging.EarlyJudge.__call__, "a bug in an early job")
    monkeypatch.setattr(judging.EarlyJudge, "__call__", failing)
    before = _children()
    assert _document(path, monkeypatch, in_child=True) == one
    parts = [part for part, _ in answers]
    assert parts[:2] == ["early1", "failed"]
    assert len(parts) <= 1 + judging.EARLY_JOBS  # no job given after the failure was seen
    assert not list(scratch.iterdir())
    assert _children() <= before


def _dies(self, fds):
    os._exit(1)


def test_a_child_that_dies_in_an_early_job_while_it_reads_is_an_error(retiring, monkeypatch):
    """The jobs run in the reader child (a thread beside the reader: no second process to count in the memory
    of the tree), so its death, killed or out of memory, ends the reading: one line, nothing left behind."""
    path, scratch = retiring
    monkeypatch.setattr(judging.EarlyJudge, "__call__", _dies)
    monkeypatch.setattr(analysis, "PREFETCH_BYTES", 0)
    before = _children()
    with pytest.raises(RstscopeError, match="reader process ended"):
        analysis.analyze_capture(path)
    assert not list(scratch.iterdir())
    assert _children() <= before


class _ReadBack:
    """A job for the child: the bytes of the file it was given."""

    def __call__(self, fds: list[int]) -> bytes:
        return os.pread(fds[0], 100, 0)


class _Raises:
    def __call__(self, fds: list[int]) -> None:
        raise ValueError("no")


@pytest.mark.parametrize("job", [_ReadBack(), _Raises()], ids=["returns", "raises"])
def test_the_reader_child_runs_a_job_with_the_files_it_is_given(tmp_path, job):
    path = tmp_path / "short.pcap"
    shortconns.generate(str(path), 100)
    given = tmp_path / "given"
    given.write_bytes(b"what the child reads")
    before = _children()
    with prefetch.PrefetchedCapture(path, chunk_packets=100) as cap, open(given, "rb") as f:
        assert sum(len(c) for c in cap.chunks()) == cap.stats.records
        pending = cap.run_in_child(job, [f.fileno()])
        if isinstance(job, _Raises):
            with pytest.raises(RstscopeError, match="job failed: no"):
                pending.result()
        else:
            assert pending.result() == b"what the child reads"
    assert _children() <= before


def test_the_reader_child_runs_jobs_in_order_while_it_still_reads(tmp_path):
    """Jobs run as they come, beside the reader, which waits for the parent to take its chunks: a job sent
    before any chunk was taken is answered while most of the capture is still to be read."""
    path = tmp_path / "short.pcap"
    shortconns.generate(str(path), 4_000)  # 2.6 MB of packet rows: more than the pipe holds
    given = tmp_path / "given"
    given.write_bytes(b"what the child reads")
    with prefetch.PrefetchedCapture(path, chunk_packets=1_000) as cap, open(given, "rb") as f:
        first = cap.run_in_child(_ReadBack(), [f.fileno()])
        second = cap.run_in_child(_Raises(), [])
        deadline = time.monotonic() + 30
        while not first.ready() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert first.ready() and first.result() == b"what the child reads"
        chunks = cap.chunks()
        taken = len(next(chunks))
        with pytest.raises(RstscopeError, match="job failed: no"):
            second.result()
        taken += sum(len(c) for c in chunks)
        assert taken == cap.stats.records > 20_000


class _Echo:
    """A job for the child: what it was made with, after a while."""

    def __init__(self, value: int, seconds: float = 0.0) -> None:
        self.value, self.seconds = value, seconds

    def __call__(self, fds: list[int]) -> int:
        time.sleep(self.seconds)
        return self.value


def test_each_job_gets_its_own_answer_whoever_waits_first(tmp_path):
    """Several owners give the child jobs (the RSTs judged while tracking, the rows encoded then, the judging
    at the end); the answers come in the order the jobs were sent, and each is kept for its job, whichever
    job is waited for first."""
    path = tmp_path / "short.pcap"
    shortconns.generate(str(path), 100)
    with prefetch.PrefetchedCapture(path, chunk_packets=100) as cap:
        jobs = [cap.run_in_child(_Echo(i, 0.5 if i == 0 else 0.0), []) for i in range(4)]
        assert not jobs[2].ready()  # the first takes a while: none is answered yet
        assert jobs[2].result() == 2  # the answers before it are kept for their jobs
        assert jobs[3].result() == 3
        assert [job.ready() for job in jobs] == [True] * 4
        assert [jobs[1].result(), jobs[0].result()] == [1, 0]
        assert sum(len(c) for c in cap.chunks()) == cap.stats.records


class _Exits:
    def __call__(self, fds: list[int]) -> None:
        time.sleep(0.2)
        os._exit(1)


def test_a_child_that_dies_fails_every_job_waiting(tmp_path):
    """Jobs of several owners wait when the child dies: each one's answer is that it ended, whichever is waited
    for first."""
    path = tmp_path / "short.pcap"
    shortconns.generate(str(path), 100)
    with prefetch.PrefetchedCapture(path, chunk_packets=100) as cap:
        first = cap.run_in_child(_Echo(1), [])
        dies, after = cap.run_in_child(_Exits(), []), cap.run_in_child(_Echo(2), [])
        with pytest.raises(RstscopeError, match="ended before its job"):
            after.result()
        assert first.result() == 1 and dies.ready()
        with pytest.raises(RstscopeError, match="ended before its job"):
            dies.result()


class _Niceness:
    """A job for the child: the niceness of the thread it runs in, and of the child's reader (its first)."""

    def __call__(self, fds: list[int]) -> tuple[int, int]:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id()), os.getpriority(os.PRIO_PROCESS, os.getpid())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a thread's own niceness is Linux's")
def test_the_childs_jobs_run_below_its_reader(tmp_path):
    """The jobs take the CPU the reader and the parent's threads leave (prefetch.JOBS_NICE); the reader, which
    the tracker waits for, keeps the command's own priority."""
    path = tmp_path / "short.pcap"
    shortconns.generate(str(path), 100)
    own = os.getpriority(os.PRIO_PROCESS, 0)
    with prefetch.PrefetchedCapture(path, chunk_packets=100) as cap:
        job, reader = cap.run_in_child(_Niceness(), []).result()
        assert sum(len(c) for c in cap.chunks()) == cap.stats.records
    assert (job, reader) == (min(own + prefetch.JOBS_NICE, 19), own)
    assert os.getpriority(os.PRIO_PROCESS, 0) == own  # this process is not changed


def _part_files(tmp_path, count: int, size: int) -> list:
    paths = []
    for i in range(count):
        paths.append(tmp_path / f"part-{i}")
        paths[-1].write_bytes(bytes([i % 256]) * size)
    return paths


def test_row_files_hold_windows_up_to_a_budget(tmp_path, monkeypatch):
    """Reading many parts keeps the last windows used up to WINDOWS_BYTES in all, not a window of each (a
    million RSTs' table in 489 parts took 412 MB that way)."""
    import tracemalloc

    monkeypatch.setattr(judging, "WINDOWS_BYTES", 1 << 20)
    rows = judging.RowFiles(_part_files(tmp_path, 40, 200_000))  # 8 MB of rows; windows of 64 KB
    tracemalloc.start()
    try:
        for i in range(40):
            for offset in range(0, 200_000, 50_000):
                assert rows.read(i * 200_000 + offset, 100) == bytes([i]) * 100
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        rows.close()
    assert held < (1 << 20) + 100_000


def test_row_files_read_alternately_keep_each_files_window(tmp_path, monkeypatch):
    """Rows read in frame order alternate between a fleet's shards' files: each file keeps its window, so
    that is one read per window's worth of rows, not one a row."""
    rows = judging.RowFiles(_part_files(tmp_path, 2, 100_000))
    reads = []
    pread = os.pread
    monkeypatch.setattr(os, "pread", lambda fd, n, at: reads.append(n) or pread(fd, n, at))
    for offset in range(0, 100_000, 100):
        for i in range(2):
            assert rows.read(i * 100_000 + offset, 100) == bytes([i]) * 100
    rows.close()
    assert len(reads) == 2


def test_row_files_make_room_for_their_descriptors(tmp_path):
    """A table of more files than the soft limit on open files leaves room for raises it (toward the hard
    limit): a fleet's table of millions of RSTs is hundreds of files, and 1,024 is a common soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = len(os.listdir("/proc/self/fd")) + judging.DESCRIPTORS_SPARE + 10
    if hard != resource.RLIM_INFINITY and hard < low + 1_000:
        pytest.skip(f"the hard limit on open files ({hard}) leaves no room to raise the soft one")
    paths = _part_files(tmp_path, 300, 10)
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
    try:
        rows = judging.RowFiles(paths)
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] > low + 300
        assert rows.read(299 * 10, 10) == bytes([299 % 256]) * 10
        rows.close()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_more_files_than_the_hard_limit_allows_are_an_error(monkeypatch):
    monkeypatch.setattr(resource, "getrlimit", lambda what: (1_024, 1_024))
    with pytest.raises(RstscopeError, match="ulimit -n"):
        judging.room_for(2_000)


def test_the_error_counts_the_files_open_already(monkeypatch):
    """A few files more can be too many when thousands are open (a directory of thousands of captures keeps
    each one's files open): the error says so, not only the few."""
    monkeypatch.setattr(resource, "getrlimit", lambda what: (1_024, 1_024))
    monkeypatch.setattr(judging, "_open_now", lambda: 1_000)
    with pytest.raises(RstscopeError, match=r"in 4 files, and 1000 are open already: .*at most 1024"):
        judging.room_for(4)


@pytest.mark.parametrize("in_child", [True, False], ids=["two processes", "one process"])
def test_the_judging_says_how_far_it_is(capture, monkeypatch, in_child):
    """``judged(done, connections)`` is told as the connections that saw a RST are judged: never backwards,
    and all of them at the end; the command shows it on a terminal."""
    path, _ = capture
    monkeypatch.setattr(analysis, "PREFETCH_BYTES", 0 if in_child else 1 << 60)
    monkeypatch.setattr(judging, "SUBJECTS_AT_ONCE", 64)  # one process tells every 64 (the capture's batches)
    calls = []
    result = analysis.analyze_capture(path, judged=lambda done, total: calls.append((done, total)))
    connections = len(result.connections.reset_ids)
    assert len(calls) > 5 and {total for _, total in calls} == {connections}
    assert [done for done, _ in calls] == sorted(done for done, _ in calls) and calls[-1] == (connections, connections)

    out, err = io.StringIO(), io.StringIO()
    env = Environment(stdout=out, stderr=err, stdout_isatty=False, stderr_isatty=True)
    assert cli.run(["analyze", str(path)], env) == 0
    assert f"evidence and verdicts, {connections:,} of {connections:,} connections with RSTs" in err.getvalue()
