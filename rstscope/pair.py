"""The article's ``a.out``: a tiny server and a looping client that reproduce TCP resets.

The server accepts connections (optionally slowly, with a small backlog), reads
``read_bytes`` of each request, writes ``response_bytes`` and closes in one of
four ways.  The client runs ``loops`` concurrent loops of attempts; each attempt
connects, sends ``request_bytes`` plus ``trailing_bytes`` (which the server never
reads when ``read_bytes == request_bytes``), reads until EOF, and optionally sends
``late_bytes`` after the response has started.

Both sides write one JSON object per line on stdout, so a run directory can join
them with the capture and the kernel's records.  Only the standard library is
used: the pair must run alone on two machines, as in the article.

Close modes (server):

========== ==================================================================
close      ``close()`` right after writing: unread request bytes turn it into
           a RST that discards any response still queued (the close race)
lingering  ``shutdown(SHUT_WR)``, read and discard until EOF or a timeout, then
           ``close()`` (Apache's lingering close: the fix)
linger0    ``SO_LINGER`` {on, 0} then ``close()``: an abortive close, always RST
linger=N   ``SO_LINGER`` {on, N seconds} then ``close()``: blocks until the
           queue drains or N seconds pass (unread bytes still mean RST)
shutdown-  once the whole response has left the socket (sent, not yet acknowledged),
close      ``shutdown(SHUT_WR)`` then ``close()`` at once with the request's
           unread bytes queued: the FIN goes first, then the abort (kernel
           ``TCP_ABORT_ON_CLOSE`` from FIN_WAIT1) with the response in flight
========== ==================================================================

For the middlebox presets the pair can also hold a connection open: the client
sends ``requests`` requests on one connection (the next after reading each
response, after ``idle`` seconds), the server answers up to ``requests`` per
connection (waiting ``request_timeout`` for each next one), can pause mid-response
(``pause_after``/``pause``: a gap in which a forged RST can be timed), can arm
TCP keepalive, and can listen on a ``second_port``.  A client with ``late_fin``
sends its late bytes and its FIN in one segment.
"""

from __future__ import annotations

import errno
import json
import os
import select
import socket
import struct
import sys
import threading
import time
from dataclasses import asdict, dataclass
from typing import Literal, TextIO

CLOSE_MODES = ("close", "lingering", "linger0", "linger=N", "shutdown-close")
"""Values accepted by ``--close`` (``linger=N`` with N a whole number of seconds)."""

Where = Literal["connect", "write", "read"]


def parse_close_mode(text: str) -> tuple[str, int | None]:
    """``"linger=5"`` -> ``("linger", 5)``; the other modes carry no number."""
    if text in ("close", "lingering", "linger0", "shutdown-close"):
        return text, None
    name, _, seconds = text.partition("=")
    if name == "linger" and seconds.isdigit():
        return "linger", int(seconds)
    raise ValueError(f"unknown close mode {text!r}: use one of close, lingering, linger0, linger=N, shutdown-close")


def parse_keepalive(text: str) -> tuple[int, int, int]:
    """``"1/1/2"`` -> (TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT), each a whole number >= 1."""
    parts = text.split("/")
    if len(parts) != 3 or not all(p.isdigit() and int(p) >= 1 for p in parts):
        raise ValueError(f"keepalive {text!r}: use IDLE/INTERVAL/COUNT in whole seconds and probes, e.g. 1/1/2")
    idle, interval, count = (int(p) for p in parts)
    return idle, interval, count


def errno_name(exc: BaseException) -> str:
    """Symbolic name of a socket error: ``ECONNRESET``, ``EPIPE``, ``timeout``, ..."""
    if isinstance(exc, TimeoutError | socket.timeout) and not getattr(exc, "errno", None):
        return "timeout"
    number = getattr(exc, "errno", None)
    if number is None:
        return type(exc).__name__
    return errno.errorcode.get(number, str(number))


def outcome_of(record: dict) -> str:
    """One word for an attempt: ``ok``, ``short-read``, ``timeout``, or ``ERRNO@where``.

    ``ok`` means no socket error and every expected byte read (or no expectation
    given); ``short-read`` means EOF came before the expected bytes with no error.
    Late-data attempts that end in EPIPE are ``EPIPE@write`` even when the whole
    response was read: that is what the application saw.
    """
    error = record.get("error")
    if error == "timeout":
        return "timeout"
    if error:
        return f"{error}@{record.get('where')}"
    expected = record.get("bytes_expected")
    if expected is not None and record.get("bytes_read", 0) < expected:
        return "short-read"
    return "ok"


# --------------------------------------------------------------------------- server


@dataclass(kw_only=True)
class ServerOptions:
    host: str = "0.0.0.0"
    """Address to bind; the lab binds the server namespace's own address."""
    port: int = 8080
    close: str = "close"
    """One of CLOSE_MODES."""
    backlog: int = 128
    """The ``listen()`` backlog; the kernel caps it at ``net.core.somaxconn``."""
    accept_delay: float = 0.0
    """Seconds to sleep before each ``accept()``: a stalled accept loop fills the accept queue."""
    read_bytes: int = 16
    """Request bytes the server reads before responding (the rest stay unread)."""
    response_bytes: int = 200_000
    lingering_timeout: float = 2.0
    """Lingering close: give up when one read waits this long (Apache: 2 s)."""
    lingering_time: float = 30.0
    """Lingering close: give up after this long in total (Apache, nginx: 30 s)."""
    max_connections: int = 0
    """Exit after this many connections have been handled (0: serve until killed)."""
    requests: int = 1
    """Requests answered per connection; after the first, wait ``request_timeout`` for each next one."""
    request_timeout: float = 10.0
    """Seconds to wait for a connection's next request before closing it."""
    pause_after: int = 0
    """Pause each response after this many bytes (0: no pause)."""
    pause: float = 0.0
    """Seconds of that pause: a gap in the stream (a forged RST is timed into it)."""
    keepalive: str | None = None
    """``IDLE/INTERVAL/COUNT`` (see :func:`parse_keepalive`): SO_KEEPALIVE on each connection."""
    second_port: int | None = None
    """Also listen on this port (a firewall may reject one port of a host whose other port works)."""


class _JsonLog:
    """One JSON object per line, flushed at once, shared by threads."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self.broken = False
        """The reader went away (``| head``): writers should stop, the caller re-raises."""

    def write(self, record: dict) -> None:
        line = json.dumps(record, sort_keys=False)
        with self._lock:
            if self.broken:
                return
            try:
                self._stream.write(line + "\n")
                self._stream.flush()
            except BrokenPipeError:
                self.broken = True


def _read_exactly(conn: socket.socket, count: int) -> int:
    """Read up to ``count`` bytes (fewer at EOF); returns how many were read."""
    got = 0
    while got < count:
        chunk = conn.recv(min(65536, count - got))
        if not chunk:
            break
        got += len(chunk)
    return got


def _close(conn: socket.socket, mode: str, linger_seconds: int | None, options: ServerOptions) -> int:
    """Close ``conn`` per ``mode``; returns the bytes drained by a lingering close."""
    drained = 0
    if mode == "lingering":
        conn.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + options.lingering_time
        conn.settimeout(options.lingering_timeout)
        try:
            while time.monotonic() < deadline:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                drained += len(chunk)
        except OSError:
            pass  # timeout or reset while draining: the response is already out, close anyway
    elif mode == "linger0":
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    elif mode == "linger":
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, linger_seconds or 0))
    elif mode == "shutdown-close":
        _wait_unsent(conn, timeout=5.0)  # the FIN leaves now, not behind the queued response
        conn.shutdown(socket.SHUT_WR)
        _wait_unsent(conn, timeout=5.0)  # a full congestion window can hold the FIN back too
    conn.close()
    return drained


SIOCOUTQNSD = 0x894B
"""ioctl: bytes in the send queue not yet sent (linux/sockios.h)."""


def _wait_unsent(conn: socket.socket, *, timeout: float) -> None:
    """Wait until every byte written was sent (maybe not yet acknowledged), at most ``timeout``."""
    import fcntl

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        unsent = struct.unpack("i", fcntl.ioctl(conn.fileno(), SIOCOUTQNSD, b"\0" * 4))[0]
        if unsent == 0:
            return
        time.sleep(0.001)


def _serve_one(conn: socket.socket, peer: tuple, options: ServerOptions, log: _JsonLog) -> None:
    mode, linger_seconds = parse_close_mode(options.close)
    record = {
        "event": "connection",
        "peer": f"{peer[0]}:{peer[1]}",
        "t_accept": time.time(),
        "bytes_read": 0,
        "bytes_sent": 0,
        "drained": 0,
        "close": options.close,
        "error": None,
        "where": None,
    }
    where = "read"
    try:
        if options.keepalive:
            idle, interval, count = parse_keepalive(options.keepalive)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, count)
        record["bytes_read"] = _read_exactly(conn, options.read_bytes)
        record["requests"] = 1
        while True:
            where = "write"
            _respond(conn, options, record)
            if record["requests"] >= options.requests:
                break
            where = "read"
            conn.settimeout(options.request_timeout)
            try:
                chunk = conn.recv(65536)
            except TimeoutError as exc:
                if exc.errno:  # ETIMEDOUT: keepalive gave up on the peer (a socket error, not our timer)
                    raise
                record["request_timeout"] = True
                break
            finally:
                conn.settimeout(None)
            if not chunk:
                break
            record["bytes_read"] += len(chunk)
            record["requests"] += 1
        where = "close"
        record["drained"] = _close(conn, mode, linger_seconds, options)
    except OSError as exc:
        record["error"] = errno_name(exc)
        record["where"] = where
        conn.close()
    record["t_close"] = time.time()
    log.write(record)


def _respond(conn: socket.socket, options: ServerOptions, record: dict) -> None:
    """Write one response, pausing after ``pause_after`` bytes when asked."""
    payload = memoryview(b"R" * options.response_bytes)
    sent = 0
    paused = not (options.pause_after and options.pause)
    while sent < len(payload):
        end = len(payload) if paused else min(len(payload), options.pause_after)
        if sent >= end:
            time.sleep(options.pause)
            paused = True
            continue
        count = conn.send(payload[sent:end])
        sent += count
        record["bytes_sent"] += count


def serve(options: ServerOptions, out: TextIO = sys.stdout, stop: threading.Event | None = None) -> int:
    """Run the server until ``stop`` is set, ``max_connections`` are served, or the process dies.

    Returns the number of connections accepted.  Each connection is handled on
    its own thread, so a slow client never stalls the accept loop; only
    ``accept_delay`` does.
    """
    parse_close_mode(options.close)  # fail before binding
    log = _JsonLog(out)
    family = socket.AF_INET6 if ":" in options.host else socket.AF_INET
    listeners = []
    for wanted in (options.port, options.second_port):
        if wanted is None:
            continue
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((options.host, wanted))
        listener.listen(options.backlog)
        listeners.append(listener)
    host, port = listeners[0].getsockname()[:2]
    record = {"event": "listening", "addr": f"{host}:{port}", "backlog": options.backlog, "t": time.time()}
    if options.second_port is not None:
        record["second_addr"] = f"{host}:{listeners[1].getsockname()[1]}"
    log.write(record)
    stop = stop or threading.Event()
    accepted = 0
    threads: list[threading.Thread] = []
    try:
        while not stop.is_set():
            if options.accept_delay and stop.wait(options.accept_delay):
                break
            ready, _, _ = select.select(listeners, [], [], 0.2)
            if not ready:
                continue
            conn, peer = ready[0].accept()
            accepted += 1
            thread = threading.Thread(target=_serve_one, args=(conn, peer, options, log), daemon=True)
            thread.start()
            threads.append(thread)
            if options.max_connections and accepted >= options.max_connections:
                break
    finally:
        for listener in listeners:
            listener.close()
        for thread in threads:
            thread.join(timeout=options.lingering_time + 5)
    return accepted


# --------------------------------------------------------------------------- client


@dataclass(kw_only=True)
class ClientOptions:
    host: str
    port: int = 8080
    loops: int = 1
    """Concurrent loops (the article's terminal sessions), each a thread."""
    count: int | None = 1
    """Attempts per loop; None when ``duration`` bounds the run instead."""
    duration: float | None = None
    """Seconds to keep starting attempts (each loop), instead of ``count``."""
    request_bytes: int = 16
    trailing_bytes: int = 8
    """Sent in the same write as the request; a server reading only the request never reads them."""
    late_bytes: int = 0
    late_delay: float = 0.0
    """Seconds after the first response byte to send ``late_bytes``."""
    expect_bytes: int | None = None
    """Response size the server was told to send; lets the client say ``short-read``."""
    timeout: float = 10.0
    """Seconds a connect or a single read may wait before the attempt is a ``timeout``."""
    probe_delay: float = 0.3
    """After late bytes sent past EOF, wait this long and write once more so a RST surfaces as EPIPE."""
    bind: str | None = None
    """Local address to bind (the lab binds the client namespace's address)."""
    requests: int = 1
    """Requests per connection: each next one is sent after reading ``expect_bytes`` of the last response."""
    next_request_bytes: int | None = None
    """Size of the requests after the first (None: ``request_bytes``); a firewall rule can match on it."""
    idle: float = 0.0
    """Seconds to stay silent before each next request (a middlebox's idle timeout may pass)."""
    late_fin: bool = False
    """Send the late bytes and the FIN in one segment (``MSG_MORE``, then ``shutdown(SHUT_WR)``)."""
    second_port: int | None = None
    """Odd-numbered loops connect to this port instead of ``port``."""
    hold: float = 0.0
    """Seconds to keep the socket open after EOF before closing it (so that the client's FIN
    cannot reach the server before the server's own close())."""


@dataclass(kw_only=True)
class Attempt:
    """One client attempt, written as one JSON line."""

    loop: int
    attempt: int
    client_port: int | None = None
    """Local port of the attempt's socket (bound before connect, so known even when connect fails)."""
    server: str = ""
    connect: str = "ok"
    """``ok`` or the errno name of the failed connect."""
    bytes_sent: int = 0
    """Request, trailing and late bytes the kernel accepted."""
    late_sent: int = 0
    bytes_read: int = 0
    bytes_expected: int | None = None
    error: str | None = None
    """Errno name (``ECONNRESET``, ``EPIPE``, ``ECONNREFUSED``) or ``timeout``; None when none."""
    where: Where | None = None
    """Which call failed: connect, write or read."""
    t_start: float = 0.0
    t_connected: float | None = None
    t_first_byte: float | None = None
    t_eof: float | None = None
    t_end: float = 0.0
    outcome: str = ""
    """``ok``, ``short-read``, ``timeout`` or ``ERRNO@where`` (see :func:`outcome_of`)."""


def _attempt(options: ClientOptions, loop: int, number: int) -> Attempt:
    port = options.second_port if options.second_port is not None and loop % 2 else options.port
    expected = options.expect_bytes * options.requests if options.expect_bytes is not None else None
    record = Attempt(
        loop=loop,
        attempt=number,
        server=f"{options.host}:{port}",
        bytes_expected=expected,
        t_start=time.time(),
    )
    family = socket.AF_INET6 if ":" in options.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    where: Where = "connect"
    try:
        sock.bind((options.bind or "", 0))
        record.client_port = sock.getsockname()[1]
        sock.settimeout(options.timeout)
        try:
            sock.connect((options.host, port))
        except OSError as exc:
            record.connect = errno_name(exc)
            raise
        record.t_connected = time.time()
        where = "write"
        request = b"Q" * options.request_bytes + b"T" * options.trailing_bytes
        sock.sendall(request)
        record.bytes_sent += len(request)
        for _ in range(options.requests - 1):
            where = "read"
            _read_response(sock, options, record)
            time.sleep(options.idle)
            where = "write"
            request = b"N" * (options.next_request_bytes if options.next_request_bytes is not None else len(request))
            sock.sendall(request)
            record.bytes_sent += len(request)
        where = "read"
        late_due: float | None = None
        late_pending = options.late_bytes > 0
        while True:
            wait = options.timeout
            if late_pending and late_due is not None:
                wait = max(0.0, min(wait, late_due - time.time()))
            readable, _, _ = select.select([sock], [], [], wait)
            if late_pending and not options.late_fin and late_due is not None and time.time() >= late_due:
                where = "write"
                _send_late(sock, options, record)
                late_pending = False
                where = "read"
            if not readable:
                if late_due is not None and wait < options.timeout:
                    continue  # woke up for the late bytes, not a read timeout
                raise TimeoutError()
            chunk = sock.recv(65536)
            if not chunk:
                record.t_eof = time.time()
                break
            if record.t_first_byte is None:
                record.t_first_byte = time.time()
                late_due = record.t_first_byte + options.late_delay
            record.bytes_read += len(chunk)
        time.sleep(options.hold)
        if late_pending:
            # The response ended before the late bytes were due: send them into the closed
            # connection, then write again so a RST that came back surfaces (EPIPE).
            where = "write"
            if late_due is not None:
                time.sleep(max(0.0, late_due - time.time()))
            if options.late_fin:
                # MSG_MORE holds the bytes back, so the FIN of shutdown() leaves in the same segment.
                payload = b"L" * options.late_bytes
                sock.sendall(payload, socket.MSG_MORE)
                record.bytes_sent += len(payload)
                record.late_sent += len(payload)
                sock.shutdown(socket.SHUT_WR)
                # After EOF neither recv (0 again) nor send (EPIPE: our own shutdown) shows a RST;
                # the socket's pending error does.
                time.sleep(options.probe_delay)
                pending = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if pending:
                    raise OSError(pending, os.strerror(pending))
            else:
                _send_late(sock, options, record)
                time.sleep(options.probe_delay)
                _send_late(sock, options, record, count=1)
    except OSError as exc:
        record.error = errno_name(exc)
        record.where = where
    finally:
        sock.close()
    record.t_end = time.time()
    record.outcome = outcome_of(asdict(record))
    return record


def _read_response(sock: socket.socket, options: ClientOptions, record: Attempt) -> None:
    """Read one whole response (``expect_bytes``) of a connection that stays open."""
    want = record.bytes_read + (options.expect_bytes or 0)
    while record.bytes_read < want:
        chunk = sock.recv(min(65536, want - record.bytes_read))
        if not chunk:
            record.t_eof = time.time()
            raise ConnectionAbortedError(errno.ECONNABORTED, "EOF before the response was complete")
        if record.t_first_byte is None:
            record.t_first_byte = time.time()
        record.bytes_read += len(chunk)


def _send_late(sock: socket.socket, options: ClientOptions, record: Attempt, count: int | None = None) -> None:
    payload = b"L" * (options.late_bytes if count is None else count)
    sock.sendall(payload)
    record.bytes_sent += len(payload)
    record.late_sent += len(payload)


def run_clients(options: ClientOptions, out: TextIO = sys.stdout) -> list[Attempt]:
    """Run ``loops`` loops concurrently; log each attempt as it ends; return all attempts."""
    log = _JsonLog(out)
    attempts: list[Attempt] = []
    lock = threading.Lock()
    deadline = time.monotonic() + options.duration if options.duration else None

    def loop(index: int) -> None:
        number = 0
        while not log.broken:
            if deadline is not None and time.monotonic() >= deadline:
                return
            if deadline is None and number >= (options.count or 1):
                return
            number += 1
            record = _attempt(options, index, number)
            log.write(asdict(record))
            with lock:
                attempts.append(record)

    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(options.loops)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if log.broken:
        raise BrokenPipeError(errno.EPIPE, "stdout closed")
    return attempts
