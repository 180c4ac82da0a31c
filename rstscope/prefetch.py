"""Read a capture in a child process while the parent tracks connections.

Reading (record walk and decoding) and tracking each take about half of the
time of ``analyze``; on a machine with two cores, running them in two processes
overlaps them.  The child is forked from the parent, opens the capture itself,
and streams the packet-table chunks back over a pipe as raw bytes (one copy on
each side, no pickling of arrays); the parent sees the same :class:`Capture`
surface as :func:`rstscope.reader.open_capture` gives.

Errors keep their meaning: the file is opened in the parent first, so an
unreadable file raises :class:`InputError` there as usual; a failure inside the
child arrives as an error message and is raised in the parent.  The child
ignores Ctrl-C (the parent decides) and is killed when the parent stops early.
Used only where ``os.fork`` exists and more than one CPU is available.

The child also does jobs for the parent (:meth:`PrefetchedCapture.run_in_child`: judging RSTs,
:mod:`rstscope.judging`; encoding document rows, :mod:`rstscope.rowsplit`), sent over a Unix socket with
the descriptors of the files they read, one after the other in the order sent, in a thread beside its
reader (which mostly waits for the parent to take its chunks); it exits when the parent closes the capture.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import signal
import socket
import struct
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator

import numpy as np

from rstscope import heap
from rstscope.ahead import SWITCH_SECONDS
from rstscope.packets import PACKET_DTYPE, ReadStats
from rstscope.reader import open_capture
from rstscope.status import RstscopeError

JOBS_NICE = 10
"""Added to the niceness of the thread that runs the child's jobs (Linux: a thread's own).  On two cores, the
parent's thread that prepares chunks and the child's reader feed the tracker, the one thing everything waits
for; the jobs (judging RSTs, encoding rows while the capture is tracked) take what CPU those leave, and share
the rest after tracking.  (They share the child's interpreter with the reader, which the switch interval
hands over, SWITCH_SECONDS: the niceness orders the threads on the cores, not the lock.)  Measured
(benchmarks/PLAN.md §27), paired with the jobs at the command's niceness: short connections 1.26 -> 1.19 s,
``--json`` 1.50 -> 1.40 s; one million connections ``--json`` 12.2 -> 11.0 s; the SYN flood, whose RSTs are
judged while it is tracked, within noise."""
_HEADER = struct.Struct("<cQ")  # message kind, payload length
_CHUNK, _STATS, _ERROR = b"C", b"S", b"E"
_PIPE_SIZE = 1 << 20  # F_SETPIPE_SZ: fewer wake-ups per chunk
_F_SETPIPE_SZ = 1031


def available() -> bool:
    """Whether reading in a child process can help here."""
    return hasattr(os, "fork") and (os.cpu_count() or 1) > 1


class PrefetchedCapture:
    """A capture read by a forked child; ``chunks()`` yields what the child decoded, in order."""

    def __init__(self, path, *, chunk_packets: int):
        with open_capture(path, chunk_packets=chunk_packets) as probe:  # InputError here, in the parent
            self.format, self.compressed, self.interfaces = probe.format, probe.compressed, probe.interfaces
        self.path = path
        self.stats = ReadStats()
        self._chunk_packets = chunk_packets
        self._pid: int | None = None
        self._reader = None
        self._jobs: socket.socket | None = None  # to the child, for run_in_child
        self._answers: _Answers | None = None
        self._kept = False

    def __enter__(self) -> PrefetchedCapture:
        jobs, child_jobs = socket.socketpair()
        read_fd, write_fd = os.pipe()
        try:
            import fcntl

            fcntl.fcntl(write_fd, _F_SETPIPE_SZ, _PIPE_SIZE)
        except OSError:
            pass  # a smaller pipe only means more wake-ups
        pid = os.fork()
        if pid == 0:  # the child: never returns
            os.close(read_fd)
            jobs.close()
            _child(self.path, self._chunk_packets, write_fd, child_jobs)
        os.close(write_fd)
        child_jobs.close()
        self._jobs = jobs
        self._answers = _Answers(jobs)
        self._pid = pid
        self._reader = os.fdopen(read_fd, "rb", buffering=0)
        return self

    def __exit__(self, *exc) -> None:
        if self._kept and exc[0] is None:
            self._close_reader()  # the child lives on: its owner closes it
        else:
            self.close()

    def keep(self) -> None:
        """Leave the child running when the capture's ``with`` block ends (no error): whoever called this
        has given it more jobs, and calls :meth:`close` itself."""
        self._kept = True

    def run_in_child(self, job: Callable[[list[int]], object], fds: list[int]) -> PendingJob:
        """Have the child, once done with the jobs sent before (while it still reads, or after), call ``job``
        (picklable) with its own copies of these descriptors (the job closes them); what it returns comes
        back through :meth:`PendingJob.result`, the results of jobs in the order they were sent.
        :class:`OSError` if the child is gone."""
        payload = pickle.dumps(job)
        socket.send_fds(self._jobs, [_LENGTH.pack(len(payload))], fds)
        self._jobs.sendall(payload)
        return self._answers.sent()

    def _close_reader(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def close(self) -> None:
        self._close_reader()
        if self._jobs is not None:
            self._jobs.close()
            self._jobs = None
        if self._pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, signal.SIGKILL)
            os.waitpid(self._pid, 0)
            self._pid = None

    def chunks(self) -> Iterator[np.ndarray]:
        while True:
            kind, payload = self._receive()
            if kind == _CHUNK:
                yield np.frombuffer(payload, dtype=PACKET_DTYPE)
            elif kind == _STATS:
                self.stats = pickle.loads(payload.tobytes())
                return
            elif kind == _ERROR:
                raise RstscopeError(payload.tobytes().decode())
            else:
                raise RstscopeError(f"reader process sent an unknown message {kind!r}")

    def _receive(self) -> tuple[bytes, np.ndarray]:
        header = self._read_exactly(_HEADER.size)
        if header is None:
            raise RstscopeError("the reader process ended without a result (killed, or out of memory?)")
        kind, length = _HEADER.unpack(header)
        payload = self._read_exactly(length)
        if payload is None:
            raise RstscopeError("the reader process ended in the middle of a message")
        return kind, payload

    def _read_exactly(self, n: int) -> np.ndarray | None:
        buf = np.empty(n, dtype=np.uint8)  # not zeroed first: the chunk's pages are written once, by the read
        view = memoryview(buf)
        got = 0
        while got < n:
            k = self._reader.readinto(view[got:])
            if not k:
                return None
            got += k
        return buf


class PendingJob:
    """A job the child runs (:meth:`PrefetchedCapture.run_in_child`)."""

    def __init__(self, answers: _Answers) -> None:
        self._answers = answers
        self.answer: tuple[bool, object] | None = _UNREAD  # type: ignore[assignment]
        """What the child sent back: (done, its value or the error); None if it ended first."""

    def ready(self) -> bool:
        """Whether :meth:`result` would return (or raise) at once: the job is done, or the child gone."""
        return self._answers.take_ready(self)

    def result(self):
        """What the job returned, once it has; :class:`RstscopeError` if it raised or the child ended."""
        self._answers.take_through(self)
        if self.answer is None:
            raise RstscopeError("the reader process ended before its job did")
        done, value = self.answer
        if not done:
            raise RstscopeError(f"the reader process's job failed: {value}")
        return value


class _Answers:
    """The child answers its jobs in the order they were sent, on one socket; several owners wait for theirs
    (the RSTs judged while tracking, the rows encoded then, the judging at the end), each answer read is kept
    for its job."""

    def __init__(self, jobs: socket.socket) -> None:
        self._jobs = jobs
        self._unread: deque[PendingJob] = deque()  # jobs sent, in order, whose answers are not read yet

    def sent(self) -> PendingJob:
        job = PendingJob(self)
        self._unread.append(job)
        return job

    def take_ready(self, job: PendingJob) -> bool:
        while job.answer is _UNREAD and (self._jobs.fileno() < 0 or select.select([self._jobs], [], [], 0)[0]):
            self._take()
        return job.answer is not _UNREAD

    def take_through(self, job: PendingJob) -> None:
        while job.answer is _UNREAD:
            self._take()

    def _take(self) -> None:
        """The oldest job's answer (waiting for it); None for it and every job after once the child ended (or
        the capture was closed)."""
        try:
            header = _received(self._jobs, _LENGTH.size)
            payload = _received(self._jobs, _LENGTH.unpack(header)[0]) if header is not None else None
        except OSError:  # the child died (the connection reset), or the capture was closed
            payload = None
        if payload is None:
            for job in self._unread:
                job.answer = None
            self._unread.clear()
            return
        job = self._unread.popleft()  # its answer, whatever becomes of the bytes: the next is the next job's
        try:
            job.answer = pickle.loads(payload)
        except Exception as exc:
            job.answer = (False, f"its answer could not be read: {exc}")


_UNREAD = object()
_LENGTH = struct.Struct("<Q")


def _received(sock: socket.socket, n: int) -> bytes | None:
    """Exactly ``n`` bytes from ``sock``; None if it closed first."""
    parts, got = [], 0
    while got < n:
        part = sock.recv(min(n - got, 1 << 20))
        if not part:
            return None
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def _child(path, chunk_packets: int, fd: int, jobs: socket.socket) -> None:
    """Read the capture and stream it to ``fd`` while a thread runs the jobs the parent sends on ``jobs``
    (the reader mostly waits for the parent to take its chunks: the pipe is full while it tracks); exit,
    once both are done, without returning to the caller's code."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The reader, back from a write, waits at most this long for the job's thread to let it run (at 5 ms the
    # parent would wait for its next chunk).
    sys.setswitchinterval(SWITCH_SECONDS)
    server = threading.Thread(target=_serve, args=(jobs,), daemon=True)
    server.start()
    status = 1
    try:
        if _streamed(path, chunk_packets, fd):
            os.close(fd)  # (its number may now be one of the jobs' files: nothing more is sent there)
            heap.give_back()  # the reader's buffers, freed
            server.join()
            status = 0
    finally:
        os._exit(status)  # also when the parent went away while a job answered


def _streamed(path, chunk_packets: int, fd: int) -> bool:
    """Stream the capture to ``fd``; whether all of it went (else the parent has the error, or is gone)."""
    try:
        with open_capture(path, chunk_packets=chunk_packets) as cap:
            for chunk in cap.chunks():
                _send(fd, _CHUNK, memoryview(np.ascontiguousarray(chunk)).cast("B"))
            _send(fd, _STATS, pickle.dumps(cap.stats))
    except BrokenPipeError:
        return False  # the parent stopped listening
    except BaseException as exc:  # report anything to the parent, which raises it as one line
        with contextlib.suppress(OSError):
            _send(fd, _ERROR, str(exc).encode() or type(exc).__name__.encode())
        return False
    return True


def _serve(jobs: socket.socket) -> None:
    """Run the parent's jobs, one after the other, until it closes ``jobs`` (or goes away); send back what
    each returned or the error it raised."""
    if sys.platform.startswith("linux"):  # elsewhere a thread's id may be another process's
        thread = threading.get_native_id()
        with contextlib.suppress(OSError):  # added to the command's own niceness, as ``nice`` adds
            os.setpriority(os.PRIO_PROCESS, thread, min(os.getpriority(os.PRIO_PROCESS, thread) + JOBS_NICE, 19))
    with contextlib.suppress(OSError):  # the parent went away: nothing to answer
        _serve_jobs(jobs)


def _serve_jobs(jobs: socket.socket) -> None:
    while True:
        header, fds, _, _ = socket.recv_fds(jobs, _LENGTH.size, 16)
        rest = _received(jobs, _LENGTH.size - len(header)) if header else None
        if not header or rest is None:
            return  # no more jobs
        payload = _received(jobs, _LENGTH.unpack(header + rest)[0])
        if payload is None:
            return
        try:
            job = pickle.loads(payload)
        except Exception as exc:
            for fd in fds:  # the job would have closed them
                os.close(fd)
            result = (False, f"the job could not be read: {exc}")
        else:
            try:
                result = (True, job(fds))
            except Exception as exc:  # the parent does the job itself then
                result = (False, str(exc) or type(exc).__name__)
        answer = pickle.dumps(result)
        jobs.sendall(_LENGTH.pack(len(answer)) + answer)
        heap.give_back()  # what the job freed: the child's share of the tree's memory stays small


def _send(fd: int, kind: bytes, payload) -> None:
    data = memoryview(payload)
    os.write(fd, _HEADER.pack(kind, data.nbytes))
    while data.nbytes:
        written = os.write(fd, data)
        data = data[written:]
