"""``rstscope pair``: the article's client/server program, usable alone on two machines."""

from __future__ import annotations

import argparse
import collections
import os
import socket

from rstscope import pair
from rstscope.status import ExitStatus, InputError, PrerequisiteError

HELP = "run the article's server, or loops of clients against it (one JSON line per attempt)"

DESCRIPTION = """\
The small client/server pair from the "lingering close" article.  The server
reads part of each request, writes a response and closes; the clients loop,
connect, send a request (plus trailing bytes the server never reads) and read
until EOF.  Each side logs one JSON line per connection on stdout; the client
prints a summary on stderr.

examples:
  # the close race: the server leaves 8 request bytes unread and closes
  rstscope pair server --port 8080 --close close --read-bytes 16 --response-bytes 200000
  rstscope pair client 192.168.1.211 --port 8080 --loops 12 --duration 60 \\
      --request-bytes 16 --trailing-bytes 8 --expect-bytes 200000 > clients.jsonl

  # the fix: a lingering close on the server
  rstscope pair server --close lingering

  # a listen backlog that overflows: tiny backlog, slow accept loop
  rstscope pair server --backlog 1 --accept-delay 0.5

  # late data: the server reads the whole request and closes; the client writes again later
  rstscope pair server --read-bytes 16 --response-bytes 2000
  rstscope pair client HOST --trailing-bytes 0 --late-bytes 100 --late-delay 0.3
"""


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def _keepalive(text: str) -> str:
    try:
        pair.parse_keepalive(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _close_mode(text: str) -> str:
    try:
        pair.parse_close_mode(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="role", metavar="ROLE", required=True)
    server = sub.add_parser("server", help="accept, read part of the request, respond, close")
    server.add_argument("--host", default="0.0.0.0", help="address to bind (default: %(default)s)")
    server.add_argument("--port", type=int, default=8080, help="port to listen on (default: %(default)s)")
    server.add_argument(
        "--close",
        type=_close_mode,
        default="close",
        metavar="{close,lingering,linger0,linger=N,shutdown-close}",
        help="how to close each connection (default: %(default)s; see 'rstscope pair --help')",
    )
    server.add_argument("--backlog", type=_non_negative_int, default=128, help="listen() backlog")
    server.add_argument(
        "--accept-delay", type=_non_negative_float, default=0.0, metavar="S", help="sleep S before each accept"
    )
    server.add_argument("--read-bytes", type=_non_negative_int, default=16, metavar="N", help="request bytes to read")
    server.add_argument("--response-bytes", type=_non_negative_int, default=200_000, metavar="N", help="response size")
    server.add_argument("--lingering-timeout", type=_non_negative_float, default=2.0, metavar="S")
    server.add_argument("--lingering-time", type=_non_negative_float, default=30.0, metavar="S")
    server.add_argument(
        "--max-connections", type=_non_negative_int, default=0, metavar="N", help="exit after N (0: never)"
    )
    server.add_argument("--requests", type=_positive_int, default=1, metavar="N", help="requests per connection")
    server.add_argument(
        "--request-timeout", type=_non_negative_float, default=10.0, metavar="S", help="wait S for a next request"
    )
    server.add_argument("--pause-after", type=_non_negative_int, default=0, metavar="N", help="pause after N bytes")
    server.add_argument("--pause", type=_non_negative_float, default=0.0, metavar="S", help="pause S seconds")
    server.add_argument(
        "--keepalive", type=_keepalive, metavar="IDLE/INTVL/CNT", help="SO_KEEPALIVE with these TCP_KEEP* values"
    )
    server.add_argument("--second-port", type=int, metavar="PORT", help="also listen on PORT")

    client = sub.add_parser("client", help="loops of connect, request, read until EOF")
    client.add_argument("host", metavar="HOST")
    client.add_argument("--port", type=int, default=8080)
    client.add_argument("--loops", type=int, default=1, metavar="N", help="concurrent loops (default: 1)")
    until = client.add_mutually_exclusive_group()
    until.add_argument("--count", type=int, metavar="N", help="attempts per loop (default: 1)")
    until.add_argument("--duration", type=_non_negative_float, metavar="S", help="keep looping for S seconds")
    client.add_argument("--request-bytes", type=_non_negative_int, default=16, metavar="N")
    client.add_argument(
        "--trailing-bytes",
        type=_non_negative_int,
        default=8,
        metavar="N",
        help="bytes sent with the request that the server will not read",
    )
    client.add_argument("--late-bytes", type=_non_negative_int, default=0, metavar="N")
    client.add_argument(
        "--late-delay",
        type=_non_negative_float,
        default=0.0,
        metavar="S",
        help="send the late bytes S after the first response byte",
    )
    client.add_argument(
        "--expect-bytes",
        type=_non_negative_int,
        metavar="N",
        help="response size the server sends (lets an attempt be a short read)",
    )
    client.add_argument("--timeout", type=_non_negative_float, default=10.0, metavar="S")
    client.add_argument("--bind", metavar="ADDR", help="local address to bind")
    client.add_argument("--requests", type=_positive_int, default=1, metavar="N", help="requests per connection")
    client.add_argument("--next-request-bytes", type=_non_negative_int, metavar="N", help="size of the next requests")
    client.add_argument(
        "--idle", type=_non_negative_float, default=0.0, metavar="S", help="stay silent S before each next request"
    )
    client.add_argument("--late-fin", action="store_true", help="send the late bytes and the FIN in one segment")
    client.add_argument("--second-port", type=int, metavar="PORT", help="odd-numbered loops connect to PORT")
    client.add_argument(
        "--hold", type=_non_negative_float, default=0.0, metavar="S", help="keep the socket S after EOF, then close"
    )


def run(args: argparse.Namespace, env) -> ExitStatus:
    if args.role == "server":
        options = pair.ServerOptions(
            host=args.host,
            port=args.port,
            close=args.close,
            backlog=args.backlog,
            accept_delay=args.accept_delay,
            read_bytes=args.read_bytes,
            response_bytes=args.response_bytes,
            lingering_timeout=args.lingering_timeout,
            lingering_time=args.lingering_time,
            max_connections=args.max_connections,
            requests=args.requests,
            request_timeout=args.request_timeout,
            pause_after=args.pause_after,
            pause=args.pause,
            keepalive=args.keepalive,
            second_port=args.second_port,
        )
        try:
            pair.serve(options, out=env.stdout)
        except OSError as exc:
            if exc.errno is not None and pair.errno_name(exc) == "EACCES":
                raise PrerequisiteError(f"cannot bind {args.host}:{args.port}: {exc.strerror}") from None
            raise InputError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
        return ExitStatus.OK

    if args.loops < 1:
        raise InputError(f"--loops must be 1 or more, got {args.loops}")
    try:
        socket.getaddrinfo(args.host, args.port)
    except socket.gaierror as exc:
        raise InputError(f"cannot resolve {args.host!r}: {exc.strerror}") from None
    options = pair.ClientOptions(
        host=args.host,
        port=args.port,
        loops=args.loops,
        count=args.count if args.duration is None else None,
        duration=args.duration,
        request_bytes=args.request_bytes,
        trailing_bytes=args.trailing_bytes,
        late_bytes=args.late_bytes,
        late_delay=args.late_delay,
        expect_bytes=args.expect_bytes,
        timeout=args.timeout,
        bind=args.bind,
        requests=args.requests,
        next_request_bytes=args.next_request_bytes,
        idle=args.idle,
        late_fin=args.late_fin,
        second_port=args.second_port,
        hold=args.hold,
    )
    try:
        attempts = pair.run_clients(options, out=env.stdout)
    except BrokenPipeError:
        _silence_stdout(env)
        raise
    outcomes = collections.Counter(a.outcome for a in attempts)
    summary = ", ".join(f"{name} {count}" for name, count in outcomes.most_common())
    env.stderr.write(f"{len(attempts)} attempts: {summary}\n")
    return ExitStatus.OK if set(outcomes) <= {"ok"} else ExitStatus.ERROR


def _silence_stdout(env) -> None:
    """After ``| head`` closed the pipe, point stdout at /dev/null so exit does not complain."""
    try:
        fd = env.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)
