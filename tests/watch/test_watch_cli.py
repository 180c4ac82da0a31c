"""``rstscope watch`` end to end without root: a fake dumpcap on PATH streams a committed lab capture;
the errors (bad interface, no capture tool, a tool that fails or dies, a bad --metrics address) are
one line on stderr and exit status 2; SIGTERM ends a session with its summary and exit status 0."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rstscope.analysis import analyze_capture
from rstscope.cli import Environment, run

REPO = Path(__file__).resolve().parents[2]
CAPTURE = REPO / "captures" / "close-race" / "capture.pcapng"


@pytest.fixture
def fake_path(tmp_path, monkeypatch):
    """A PATH whose dumpcap is tests/watch/fake_dumpcap.py (and no tcpdump)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "dumpcap"
    tool.write_text(f'#!/bin/sh\nexec {sys.executable} {Path(__file__).with_name("fake_dumpcap.py")} "$@"\n')
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    return bin_dir


def watch(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = run(["watch", *args], Environment(stdout=out, stderr=err))
    return status, out.getvalue(), err.getvalue()


def one_error_line(err: str, *words: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rstscope: error: "), err
    for word in words:
        assert word in lines[0], err


def test_bad_interface():
    status, _, err = watch("-i", "nosuchif0")
    assert status == 2
    one_error_line(err, "no such interface: nosuchif0")


def test_no_capture_tool(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    status, _, err = watch("-i", "lo")
    assert status == 2
    one_error_line(err, "capture tool not found", "dumpcap", "tcpdump")


def test_tool_cannot_start(fake_path, monkeypatch):
    monkeypatch.setenv("FAKE_DUMPCAP", "fail")
    status, _, err = watch("-i", "lo")
    assert status == 2
    one_error_line(err, "could not start capturing on lo", "You don't have permission", "exit status 2")


def test_tool_dies_while_capturing(fake_path, monkeypatch):
    monkeypatch.setenv("FAKE_DUMPCAP", f"die:{CAPTURE}")
    status, out, err = watch("-i", "lo", "--json")
    assert status == 2
    tail = [line for line in err.strip().splitlines() if not line.startswith("rstscope: watching")]
    one_error_line("\n".join(tail), "stopped capturing on its own", "The interface disappeared", "exit status 1")
    rows = [json.loads(line) for line in out.splitlines()]
    assert "summary" in rows[-1]  # what was seen is still judged and summed up


@pytest.mark.parametrize("address", ["nonsense", "127.0.0.1:0", "127.0.0.1:99999", "no.such.host.invalid:9464"])
def test_bad_metrics_address(fake_path, address):
    status, _, err = watch("-i", "lo", "--metrics", address)
    assert status == 2
    one_error_line(err, "--metrics")


def test_metrics_port_taken(fake_path, monkeypatch):
    monkeypatch.setenv("FAKE_DUMPCAP", f"replay:{CAPTURE}")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        status, _, err = watch("-i", "lo", "--metrics", f"127.0.0.1:{taken.getsockname()[1]}")
    assert status == 2
    one_error_line(err, "cannot listen")


def test_sigterm_ends_the_session_with_its_summary(fake_path):
    """The committed close-race capture streamed by the fake dumpcap: the verdicts of analyze, then
    SIGTERM: the summary (with the tool's drop count) and exit status 0."""
    env = {**os.environ, "FAKE_DUMPCAP": f"replay:{CAPTURE}"}
    proc = subprocess.Popen([sys.executable, "-m", "rstscope", "watch", "-i", "lo"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)  # fmt: skip
    analysis = analyze_capture(CAPTURE)
    primaries = [analysis.primary_reset(c) for c in dict.fromkeys(r["connection"] for r in analysis.resets)]
    primaries = [p for p in primaries if p is not None]
    lines = []
    deadline = time.monotonic() + 20
    while len(lines) < len(primaries) and time.monotonic() < deadline:
        lines.append(proc.stdout.readline())
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    lines += out.splitlines(keepends=True)
    assert proc.returncode == 0, err
    resets = [line.split() for line in lines if " -> " in line and "listen queue" not in line]
    assert [(int(f[1][1:]), f[5]) for f in resets] == [(p["connection"], p["verdict"]) for p in primaries]
    summary = lines[-1]
    assert summary.startswith("session: ") and "(3 dropped by the capture)" in summary, summary
    assert f"{len(primaries)} primary RSTs" in summary


def test_ring_and_snapshots(fake_path, monkeypatch, tmp_path):
    """The ring keeps the stream in rotating files that are captures on their own (together, every
    packet); a snapshot is a run directory that `rstscope report` reads."""
    monkeypatch.setenv("FAKE_DUMPCAP", f"die:{CAPTURE}")  # the stream ends by itself: the test ends
    ring = tmp_path / "ring"
    status, _, err = watch("-i", "lo", "--ring", str(ring), "--ring-size", "0.02", "--ring-files", "1000",
                             "--snapshot", "close-race", "--snapshot-seconds", "5")  # fmt: skip
    assert status == 2  # the fake tool "died"; everything before was written
    files = sorted(ring.glob("ring-*.pcapng"))
    assert len(files) > 1
    whole = analyze_capture(CAPTURE)
    assert sum(analyze_capture(f).capture.stats.records for f in files) == whole.capture.stats.records
    snapshots = sorted((ring / "snapshots").iterdir())
    close_races = [r for r in whole.resets if r["verdict"] == "close-race"]
    assert len(snapshots) == len({r["connection"] for r in close_races}) > 0
    first = snapshots[0]
    run_json = json.loads((first / "run.json").read_text())
    assert run_json["watch"]["verdict"] == "close-race"
    report = io.StringIO()
    assert run(["report", str(first), "-o", str(tmp_path / "report.html")],
               Environment(stdout=report, stderr=io.StringIO())) == 0  # fmt: skip
    assert (tmp_path / "report.html").stat().st_size > 0
    assert "snapshot of #" in err


def test_ring_files_are_bounded(fake_path, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_DUMPCAP", f"die:{CAPTURE}")
    ring = tmp_path / "ring"
    watch("-i", "lo", "--ring", str(ring), "--ring-size", "0.02", "--ring-files", "2")
    files = sorted(ring.glob("ring-*.pcapng"))
    assert len(files) == 2 and files[-1].name != "ring-000002.pcapng"  # older ones deleted
    for f in files:
        analyze_capture(f)  # each file is a capture on its own
