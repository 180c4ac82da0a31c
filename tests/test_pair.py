"""The article's pair over 127.0.0.1: the close race and its fix, without root."""

from __future__ import annotations

import io
import json
import socket
import threading

import pytest

from rstscope import pair


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_pair(close: str, *, read_bytes=16, response_bytes=200_000, server=None, **client):
    port = free_port()
    server_out = io.StringIO()
    stop = threading.Event()
    options = pair.ServerOptions(
        host="127.0.0.1", port=port, close=close, read_bytes=read_bytes, response_bytes=response_bytes,
        lingering_timeout=1.0, lingering_time=3.0, **(server or {}),
    )  # fmt: skip
    thread = threading.Thread(target=pair.serve, args=(options, server_out, stop), daemon=True)
    thread.start()
    for _ in range(100):
        if '"listening"' in server_out.getvalue():
            break
        threading.Event().wait(0.02)
    client_out = io.StringIO()
    defaults = {"loops": 3, "count": 2, "request_bytes": 16, "trailing_bytes": 8, "expect_bytes": response_bytes}
    defaults.update(client)
    attempts = pair.run_clients(pair.ClientOptions(host="127.0.0.1", port=port, timeout=5.0, **defaults), client_out)
    stop.set()
    thread.join(timeout=10)
    lines = [json.loads(line) for line in client_out.getvalue().splitlines()]
    server_lines = [json.loads(line) for line in server_out.getvalue().splitlines()]
    return attempts, lines, server_lines


def test_naive_close_with_unread_bytes_resets_every_client():
    attempts, lines, server = run_pair("close")
    assert len(attempts) == 6 and len(lines) == 6
    # the server's RST replaces its FIN: no client ever sees EOF
    assert {a.outcome for a in attempts} == {"ECONNRESET@read"}
    assert all(s["error"] is None for s in server if s["event"] == "connection")  # the server saw no error


def test_lingering_close_delivers_everything():
    attempts, _, server = run_pair("lingering")
    assert {a.outcome for a in attempts} == {"ok"}
    assert all(a.bytes_read == 200_000 for a in attempts)
    assert all(s["drained"] == 8 for s in server if s["event"] == "connection")  # the trailing bytes


def test_linger0_resets():
    attempts, _, _ = run_pair("linger0", trailing_bytes=0, count=1)
    assert {a.outcome for a in attempts} == {"ECONNRESET@read"}


def test_late_data_after_fin_is_epipe():
    attempts, _, _ = run_pair(
        "close", response_bytes=2000, trailing_bytes=0, late_bytes=100, late_delay=0.2, count=1, loops=2
    )
    assert {a.outcome for a in attempts} == {"EPIPE@write"}
    assert all(a.bytes_read == 2000 and a.t_eof is not None for a in attempts)


def test_refused_is_logged_with_the_client_port():
    port = free_port()
    attempts = pair.run_clients(pair.ClientOptions(host="127.0.0.1", port=port, loops=1, count=1), io.StringIO())
    attempt = attempts[0]
    assert attempt.outcome == "ECONNREFUSED@connect" and attempt.connect == "ECONNREFUSED"
    assert attempt.client_port and attempt.t_connected is None


@pytest.mark.parametrize(
    ("record", "outcome"),
    [
        ({"error": None, "bytes_read": 10, "bytes_expected": 10}, "ok"),
        ({"error": None, "bytes_read": 5, "bytes_expected": 10}, "short-read"),
        ({"error": None, "bytes_read": 5, "bytes_expected": None}, "ok"),
        ({"error": "timeout", "where": "read"}, "timeout"),
        ({"error": "ECONNRESET", "where": "read"}, "ECONNRESET@read"),
        ({"error": "EPIPE", "where": "write", "bytes_read": 10, "bytes_expected": 10}, "EPIPE@write"),
    ],
)
def test_outcome_of(record, outcome):
    assert pair.outcome_of(record) == outcome


def test_close_modes():
    assert pair.parse_close_mode("linger=5") == ("linger", 5)
    assert pair.parse_close_mode("lingering") == ("lingering", None)
    with pytest.raises(ValueError, match="unknown close mode"):
        pair.parse_close_mode("linger=x")


def test_errno_names():
    assert pair.errno_name(ConnectionResetError(104, "reset")) == "ECONNRESET"
    assert pair.errno_name(TimeoutError()) == "timeout"
    assert pair.errno_name(TimeoutError()) == "timeout"


# --------------------------------------------------------------------------- middlebox presets' needs


def test_two_requests_on_one_connection():
    attempts, _, server = run_pair(
        "close", trailing_bytes=0, response_bytes=3000, count=1, loops=2, requests=2, next_request_bytes=600,
        server={"requests": 2, "request_timeout": 2.0},
    )  # fmt: skip
    assert {a.outcome for a in attempts} == {"ok"}
    assert all(a.bytes_read == 6000 == a.bytes_expected and a.bytes_sent == 616 for a in attempts)
    connections = [r for r in server if r["event"] == "connection"]
    assert [r["requests"] for r in connections] == [2, 2] and all(r["bytes_read"] == 616 for r in connections)


def test_server_gives_up_waiting_for_a_next_request():
    _, _, server = run_pair(
        "close", trailing_bytes=0, response_bytes=1000, count=1, loops=1, server={"requests": 2, "request_timeout": 0.3}
    )
    connection = next(r for r in server if r["event"] == "connection")
    assert connection["request_timeout"] is True and connection["requests"] == 1 and connection["error"] is None


def test_pause_mid_response_keeps_every_byte():
    attempts, _, _ = run_pair(
        "close", trailing_bytes=0, response_bytes=50_000, count=1, loops=1, server={"pause_after": 20_000, "pause": 0.3}
    )
    assert attempts[0].outcome == "ok" and attempts[0].t_eof - attempts[0].t_first_byte >= 0.25


def test_second_port_serves_odd_loops():
    port2 = free_port()
    attempts, _, _ = run_pair(
        "close", trailing_bytes=0, response_bytes=1000, count=1, loops=2, second_port=port2,
        server={"second_port": port2},
    )  # fmt: skip
    assert sorted(a.server.rsplit(":", 1)[1] == str(port2) for a in attempts) == [False, True]
    assert {a.outcome for a in attempts} == {"ok"}


def test_late_fin_is_answered_with_a_reset():
    attempts, _, _ = run_pair(
        "close", trailing_bytes=0, response_bytes=2000, count=1, loops=2, late_bytes=100, late_fin=True
    )
    assert {a.outcome for a in attempts} == {"ECONNRESET@write"}
    assert all(a.bytes_read == 2000 and a.late_sent == 100 for a in attempts)


def test_shutdown_close_is_a_close_mode():
    # Over loopback the whole response and the FIN reach the client before the RST, so the
    # reset itself is checked in the lab (tests/lab/test_lab_root.py, shutdown-close).
    assert pair.parse_close_mode("shutdown-close") == ("shutdown-close", None)


def test_keepalive_option_is_checked():
    assert pair.parse_keepalive("1/1/2") == (1, 1, 2)
    for bad in ("1/1", "0/1/2", "a/b/c"):
        with pytest.raises(ValueError, match="IDLE/INTERVAL/COUNT"):
            pair.parse_keepalive(bad)
