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
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import struct
from collections.abc import Iterator

import numpy as np

from rstscope.packets import PACKET_DTYPE, ReadStats
from rstscope.reader import open_capture
from rstscope.status import RstscopeError

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

    def __enter__(self) -> PrefetchedCapture:
        read_fd, write_fd = os.pipe()
        try:
            import fcntl

            fcntl.fcntl(write_fd, _F_SETPIPE_SZ, _PIPE_SIZE)
        except OSError:
            pass  # a smaller pipe only means more wake-ups
        pid = os.fork()
        if pid == 0:  # the child: never returns
            os.close(read_fd)
            _child(self.path, self._chunk_packets, write_fd)
        os.close(write_fd)
        self._pid = pid
        self._reader = os.fdopen(read_fd, "rb", buffering=0)
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
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
                self.stats = pickle.loads(payload)
                return
            elif kind == _ERROR:
                raise RstscopeError(payload.decode())
            else:
                raise RstscopeError(f"reader process sent an unknown message {kind!r}")

    def _receive(self) -> tuple[bytes, bytearray]:
        header = self._read_exactly(_HEADER.size)
        if header is None:
            raise RstscopeError("the reader process ended without a result (killed, or out of memory?)")
        kind, length = _HEADER.unpack(header)
        payload = self._read_exactly(length)
        if payload is None:
            raise RstscopeError("the reader process ended in the middle of a message")
        return kind, payload

    def _read_exactly(self, n: int) -> bytearray | None:
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            k = self._reader.readinto(view[got:])
            if not k:
                return None
            got += k
        return buf


def _child(path, chunk_packets: int, fd: int) -> None:
    """Read the capture and stream it to ``fd``; exit without returning to the caller's code."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    status = 0
    try:
        with open_capture(path, chunk_packets=chunk_packets) as cap:
            for chunk in cap.chunks():
                _send(fd, _CHUNK, memoryview(np.ascontiguousarray(chunk)).cast("B"))
            _send(fd, _STATS, pickle.dumps(cap.stats))
    except BrokenPipeError:
        status = 1  # the parent stopped listening
    except BaseException as exc:  # report anything to the parent, which raises it as one line
        with contextlib.suppress(OSError):
            _send(fd, _ERROR, str(exc).encode() or type(exc).__name__.encode())
        status = 1
    finally:
        os._exit(status)


def _send(fd: int, kind: bytes, payload) -> None:
    data = memoryview(payload)
    os.write(fd, _HEADER.pack(kind, data.nbytes))
    while data.nbytes:
        written = os.write(fd, data)
        data = data[written:]
