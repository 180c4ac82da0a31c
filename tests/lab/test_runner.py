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


def _run_with_capture(tmp_path, kernel_resets: int, out_rsts: int | None = None, qdisc_drops: int = 0):
    import json

    from scapy.utils import wrpcap

    from rstscope.lab import rundir
    from tests import scenarios as conversations

    wrpcap(str(tmp_path / "capture.pcapng"), conversations.close_race().packets)  # 4 RSTs
    record = {"event": "tcp_send_reset", "time": 1.0, "src": "10.0.0.2:8080", "dst": "10.0.0.1:40000"}
    rundir.write_jsonl(tmp_path / rundir.KERNEL, [record] * kernel_resets)
    if out_rsts is not None:
        counters = {"server": {"counters": {"TcpOutRsts": out_rsts}, "other": {}},
                    "client": {"counters": {"TcpOutRsts": 0}, "other": {}}}  # fmt: skip
        (tmp_path / rundir.NSTAT).write_text(json.dumps(counters))
    run = {rundir.MARKER: 1, "status": "ok", "capture": {"file": "capture.pcapng"},
           "capabilities": {"capture_tool": "dumpcap"}, "trace": {"available": True, "kept": kernel_resets},
           "qdisc_drops": {"server": qdisc_drops}}  # fmt: skip
    return runner.RunRecord(tmp_path, run)


@pytest.mark.parametrize(
    ("kernel", "out_rsts", "drops", "status"),
    [
        (4, 4, 0, "ok"),  # every RST the kernel sent is in the capture
        (5, None, 0, "ok"),  # one missed: within the slack (a RST sent as the capture stopped)
        (40, None, 0, "degraded"),  # the trace says 40
        (4, 40, 0, "degraded"),  # the counters say 40 (no trace record for most)
        (40, 40, 36, "ok"),  # 36 lost in the link's qdiscs: the capture could not see them
    ],
)
def test_capture_cross_checked_against_the_kernel(tmp_path, kernel, out_rsts, drops, status):
    record = _run_with_capture(tmp_path, kernel, out_rsts, drops)
    runner._check_capture(record, kernel_scope="lab")
    assert record.run["status"] == status
    check = record.run["capture_check"]
    assert check["capture_rsts"] == 4 and check["kernel_rsts"] == max(kernel, out_rsts or 0)
    warned = [w for w in record.run.get("warnings", []) if "the capture missed resets" in w]
    assert bool(warned) == (status == "degraded")
    import json

    assert json.loads((tmp_path / "run.json").read_text())["status"] == status  # saved at once


def test_capture_runs_are_not_cross_checked(tmp_path):
    """`rstscope capture`: host-wide kernel counts against one filtered interface prove nothing."""
    record = _run_with_capture(tmp_path, 40)
    runner._check_capture(record, kernel_scope=None)
    assert record.run["status"] == "ok" and "kernel_rsts" not in record.run["capture_check"]


@pytest.mark.root
def test_run_json_on_a_full_disk_still_says_how_the_run_ended(tmp_path):
    """No room for an atomic rewrite: run.json is rewritten in place, compact, and says failed."""
    import json
    import os
    import subprocess

    from rstscope.lab import rundir

    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    point = tmp_path / "full"
    point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(point)], check=True)
    try:
        run = {rundir.MARKER: 1, "kind": "lab", "status": "running", "plan": ["step"] * 500, "names": {"prefix": "x"}}
        record = runner.RunRecord(point, run)
        record.save()
        with open(point / "filler", "wb") as filler, pytest.raises(OSError):
            filler.write(b"x" * (1 << 20))
            filler.flush()
        run["executed"] = [{"step": n, "rc": 0} for n in range(100)]  # more than fits anywhere now
        record.set_status("ok")
        saved = json.loads((point / "run.json").read_text())
        assert saved["status"] == "failed" and "No space left on device" in saved["error"]
        assert record.save_error and "No space left on device" in record.save_error
        assert sorted(p.name for p in point.iterdir()) == ["filler", "run.json"]
    finally:
        subprocess.run(["umount", str(point)], check=False)
