"""The tracefs line parser and the run filter, on lines in the kernel's own format."""

from __future__ import annotations

import time

import pytest

from rstscope.lab import trace

# Lines as this machine's kernel (6.18) writes them in an instance's `trace` file.
CLOSE = (
    "          python-4084    [000] .....   565.826591: tcp_send_reset: skbaddr=0000000000000000 "
    "skaddr=00000000a899f7dd src=127.0.0.1:18080 dest=127.0.0.1:37625 state=TCP_CLOSE reason=TCP_ABORT_ON_CLOSE"
)
LISTENER = (
    "          python-4083    [001] ..s1.   565.826611: tcp_send_reset: skbaddr=000000005e47e2d0 "
    "skaddr=0000000003662e9e src=127.0.0.1:18080 dest=0.0.0.0:0 state=TCP_LISTEN reason=TCP_FLAGS"
)
IDLE = (
    "          <idle>-0       [003] ..s2.  1234.000001: tcp_send_reset: skbaddr=00000000deadbeef "
    "skaddr=0000000000000000 src=10.1.2.1:8080 dest=10.1.2.2:5555 state=UNKNOWN reason=NO_SOCKET"
)
STATE = (
    "          python-4083    [000] ..s2.   565.825914: inet_sock_set_state: family=AF_INET protocol=IPPROTO_TCP "
    "sport=18080 dport=37625 saddr=127.0.0.1 daddr=127.0.0.1 saddrv6=::ffff:127.0.0.1 "
    "daddrv6=::ffff:127.0.0.1 oldstate=TCP_LISTEN newstate=TCP_SYN_RECV"
)
SYNACK = (
    "    ksoftirqd/1-20      [001] ..s1.   100.500000: tcp_retransmit_synack: skaddr=000000001111aaaa "
    "req=000000002222bbbb family=AF_INET sport=8080 dport=40000 saddr=10.1.2.1 daddr=10.1.2.2 "
    "saddrv6=::ffff:10.1.2.1 daddrv6=::ffff:10.1.2.2"
)
DROP = (
    "          python-77      [000] ..s1.   100.600000: kfree_skb: skbaddr=00000000cccc0000 "
    "rx_sk=000000001111aaaa protocol=2048 location=tcp_v4_rcv+0x1a/0x400 reason: TCP_LISTEN_OVERFLOW"
)


def test_parse_active_close_reset():
    record = trace.parse_line(CLOSE)
    assert record == {
        "event": "tcp_send_reset",
        "boot_time": 565.826591,
        "task": "python",
        "pid": 4084,
        "cpu": 0,
        "src": "127.0.0.1:18080",
        "dst": "127.0.0.1:37625",
        "state": "TCP_CLOSE",
        "reason": "TCP_ABORT_ON_CLOSE",
        "skaddr": "00000000a899f7dd",
        "skbaddr": "0000000000000000",
        "active": True,
        "listener": False,
    }


def test_parse_listener_reset_has_no_peer():
    record = trace.parse_line(LISTENER)
    assert record["listener"] is True and record["active"] is False
    assert record["state"] == "TCP_LISTEN" and record["reason"] == "TCP_FLAGS"


def test_parse_body_in_the_format_resets_md_prints():
    body = "src=10.0.0.1:80 dest=10.0.0.2:5555 state=TCP_ESTABLISHED reason=TCP_ABORT_ON_CLOSE"
    fields = trace.parse_body("tcp_send_reset", body)
    assert fields["src"] == "10.0.0.1:80" and fields["dst"] == "10.0.0.2:5555"
    assert fields["state"] == "TCP_ESTABLISHED" and fields["reason"] == "TCP_ABORT_ON_CLOSE"
    assert fields["active"] is None  # no skbaddr printed: unknown


def test_parse_task_names_with_odd_characters():
    record = trace.parse_line(IDLE)
    assert record["task"] == "<idle>" and record["pid"] == 0 and record["cpu"] == 3
    record = trace.parse_line(SYNACK)
    assert record["task"] == "ksoftirqd/1" and record["src"] == "10.1.2.1:8080" and record["dst"] == "10.1.2.2:40000"


def test_parse_state_change_and_drop():
    state = trace.parse_line(STATE)
    assert (state["oldstate"], state["newstate"]) == ("TCP_LISTEN", "TCP_SYN_RECV")
    assert state["src"] == "127.0.0.1:18080"
    drop = trace.parse_line(DROP)
    assert drop["reason"] == "TCP_LISTEN_OVERFLOW" and drop["rx_sk"] == "000000001111aaaa"


@pytest.mark.parametrize("line", ["# tracer: nop", "#", "", "   CPU:0 [LOST 12 EVENTS]"])
def test_comments_and_noise_are_skipped(line):
    assert trace.parse_line(line) is None


def test_times_move_to_the_capture_clock():
    records = trace.to_capture_clock([trace.parse_line(CLOSE)], offset=1_700_000_000.0)
    assert records[0]["time"] == pytest.approx(1_700_000_565.826591)


def test_clock_offset_is_realtime_minus_boottime():
    expected = time.clock_gettime(time.CLOCK_REALTIME) - time.clock_gettime(time.CLOCK_BOOTTIME)
    assert trace.clock_offset() == pytest.approx(expected, abs=0.01)


def test_keep_for_run_filters_by_address_and_attributes_drops():
    records = [trace.parse_line(line) for line in (CLOSE, LISTENER, IDLE, SYNACK, DROP)]
    kept = trace.keep_for_run(records, {"10.1.2.1": "server", "10.1.2.2": "client"})
    events = [(r["event"], r["netns"]) for r in kept]
    # 127.0.0.1 records belong to someone else; the drop is on the run's listener (from the SYN-ACK)
    assert events == [
        ("tcp_retransmit_synack", "server"),
        ("kfree_skb", "server"),
        ("tcp_send_reset", "server"),
    ]


def test_keep_for_run_unattributed_drops_and_loopback_ports():
    drop = trace.parse_line(DROP)
    kept = trace.keep_for_run([drop], {"10.9.9.1": "server"})
    assert kept[0]["netns"] == "unattributed"
    records = [trace.parse_line(CLOSE), trace.parse_line(LISTENER)]
    assert len(trace.keep_for_run(records, {"127.0.0.1": "host"}, ports={18080})) == 2
    assert trace.keep_for_run(records, {"127.0.0.1": "host"}, ports={9}) == []
    assert len(trace.keep_for_run(records, None)) == 2


def test_enum_value_from_format(tmp_path):
    fmt = tmp_path / "format"
    fmt.write_text(
        'print fmt: "reason: %s", __print_symbolic(REC->reason, { 39, "TCP_OFO" }, { 40, "TCP_LISTEN_OVERFLOW" })'
    )
    assert trace._enum_value(fmt, "TCP_LISTEN_OVERFLOW") == 40
    assert trace._enum_value(fmt, "NOPE") is None
