"""Run bookkeeping that needs no root: drop counts, option checks."""

from __future__ import annotations

import pytest

from rstscope.lab import runner, scenarios
from rstscope.status import InputError

DUMPCAP = """Capturing on 'rsabcdc'
File: capture.pcapng
Packets captured: 1630
Packets received/dropped on interface 'rsabcdc': 1630/7 (pcap:0/dumpcap:0/flushed:0/ps_ifdrop:7) (99.6%)
"""
TCPDUMP = """tcpdump: listening on rsabcdc, link-type EN10MB (Ethernet), snapshot length 262144 bytes
1630 packets captured
1631 packets received by filter
3 packets dropped by kernel
"""


def test_capture_stats_dumpcap():
    stats = runner.capture_stats(DUMPCAP)
    assert stats["captured"] == 1630 and stats["dropped"] == 7 and stats["detail"]["ps_ifdrop"] == 7


def test_capture_stats_tcpdump():
    assert runner.capture_stats(TCPDUMP) == {"captured": 1630, "received": 1631, "dropped": 3}


def test_capture_stats_scapy():
    assert runner.capture_stats("sniffing on x\ncaptured 12 dropped 0\n") == {"captured": 12, "dropped": 0}


def test_loopback_refuses_host_sysctls_and_shaping():
    with pytest.raises(InputError, match="host's sysctls"):
        runner.check_options(scenarios.options_for("backlog", loopback=True), set())
    with pytest.raises(InputError, match="--rate"):
        runner.check_options(scenarios.options_for("clean", loopback=True), {"rate"})
    runner.check_options(scenarios.options_for("close-race", loopback=True), {"loopback"})


def test_prepare_picks_ports_per_mode():
    caps = scenarios.Capabilities(python="p", project_root="r", capture_tool="dumpcap")
    options, names, _ = runner.prepare(scenarios.options_for("clean", port=0), caps)
    assert options.port == runner.NAMESPACE_PORT and names.server_ns
    options, names, _ = runner.prepare(scenarios.options_for("clean", port=0, loopback=True), caps)
    assert options.port > 1024 and names.server_ip == "127.0.0.1" and not names.server_ns
