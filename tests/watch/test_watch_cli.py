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
    primaries = [analysis.primary_reset(c) for c in dict.fromkeys(r.evidence.connection for r in analysis.resets)]
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
    assert [(int(f[1][1:]), f[5]) for f in resets] == [(p.evidence.connection, p.verdict.value) for p in primaries]
    summary = lines[-1]
    assert summary.startswith("session: ") and "(3 dropped by the capture)" in summary, summary
    assert f"{len(primaries)} primary RSTs" in summary
