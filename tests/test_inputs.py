"""Read-once inputs (issue 10, item 5): ``-``, FIFOs and pipes work for every command, read once,
and nothing blocks without saying why."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from scapy.utils import wrpcap

from rstscope import inputs
from tests import scenarios

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def capture(tmp_path) -> Path:
    path = tmp_path / "close-race.pcap"
    wrpcap(str(path), scenarios.close_race().packets)
    return path


def cli(*argv: str, stdin=None, input_bytes: bytes | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "rstscope", *argv], cwd=REPO, env=env, stdin=stdin,
                          input=input_bytes, capture_output=True, timeout=timeout)  # fmt: skip


def feed_fifo_later(fifo: Path, data: bytes, delay: float) -> threading.Thread:
    def write() -> None:
        time.sleep(delay)
        with open(fifo, "wb") as out:
            out.write(data)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("command", ["analyze", "analyze --json", "conns", "conns --zeek"])
def test_standard_input(capture, command):
    from_file = cli(*command.split(), str(capture))
    piped = cli(*command.split(), "-", input_bytes=capture.read_bytes())
    assert piped.returncode == 0, piped.stderr
    if "--json" in command:
        a, b = json.loads(from_file.stdout), json.loads(piped.stdout)
        assert a["resets"] == b["resets"] and a["summary"] == b["summary"]
        assert b["captures"][0]["path"] == inputs.STDIN_LABEL
    elif "--zeek" not in command:  # conn.log carries its open time
        assert piped.stdout.replace(b"stdin", b"") == from_file.stdout.replace(str(capture).encode(), b"")


@pytest.mark.parametrize("command", ["analyze", "conns", "plot", "report"])
def test_fifo_with_a_late_writer_says_it_waits(tmp_path, capture, command):
    fifo = tmp_path / "live.pcap"
    os.mkfifo(fifo)
    extra = {"plot": ["-o", str(tmp_path / "plots"), "--format", "png"], "report": ["-o", str(tmp_path / "r.html")]}
    writer = feed_fifo_later(fifo, capture.read_bytes(), delay=1.5)
    result = cli(command, str(fifo), *extra.get(command, []))
    writer.join(5)
    assert result.returncode == 0, result.stderr
    assert f"rstscope: waiting for a writer on {fifo} (Ctrl-C to stop)".encode() in result.stderr
    if command == "plot":  # each figure goes back to the capture: the FIFO was spooled, read once
        assert (tmp_path / "plots" / "overview.png").is_file()
        assert any(p.name.startswith("connection-") for p in (tmp_path / "plots").iterdir())
    if command == "report":
        assert "close-race" in (tmp_path / "r.html").read_text()


@pytest.mark.parametrize("command", ["plot", "report"])
def test_standard_input_for_commands_that_read_twice(tmp_path, capture, command):
    out = {"plot": ["-o", str(tmp_path / "plots")], "report": ["-o", str(tmp_path / "r.html")]}[command]
    result = cli(command, "-", *out, input_bytes=capture.read_bytes())
    assert result.returncode == 0, result.stderr
    written = result.stdout.decode().split()
    assert written and all(Path(p).is_file() for p in written)
    assert not list(Path("/tmp").glob("rstscope-input-*")) or all(
        p.stat().st_mtime < time.time() - 60 for p in Path("/tmp").glob("rstscope-input-*")
    ), "the spooled copy was not removed"


def test_fifo_without_writer_can_be_interrupted(tmp_path):
    fifo = tmp_path / "nobody-writes"
    os.mkfifo(fifo)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "rstscope", "analyze", str(fifo)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 30
    seen = ""
    os.set_blocking(proc.stderr.fileno(), False)
    while time.monotonic() < deadline and "waiting" not in seen:
        try:
            seen += os.read(proc.stderr.fileno(), 4096).decode()
        except BlockingIOError:
            time.sleep(0.05)
    assert f"rstscope: waiting for a writer on {fifo}" in seen
    proc.send_signal(signal.SIGINT)
    proc.wait(30)
    os.set_blocking(proc.stderr.fileno(), True)
    seen += proc.stderr.read().decode()
    assert proc.returncode == 130 and seen.endswith("rstscope: interrupted\n") and "Traceback" not in seen


def test_fifo_whose_writer_already_left(tmp_path, capture):
    """Writer done before rstscope opens: a FIFO whose data sits in the pipe is still read whole."""
    fifo = tmp_path / "done.pcap"
    os.mkfifo(fifo)
    data = capture.read_bytes()
    assert len(data) < 60_000  # fits in the pipe buffer, so the writer can finish alone
    reader_fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # keeps the pipe alive meanwhile
    with open(fifo, "wb") as out:
        out.write(data)
    result = cli("analyze", str(fifo), "--json")
    os.close(reader_fd)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["summary"] == json.loads(cli("analyze", str(capture), "--json").stdout)["summary"]


def test_terminal_on_standard_input_is_refused():
    leader, follower = os.openpty()
    try:
        result = cli("analyze", "-", stdin=follower, timeout=30)
    finally:
        os.close(leader)
        os.close(follower)
    assert result.returncode == 2
    assert result.stderr.startswith(b"rstscope: error: standard input is a terminal")


def test_standard_input_twice_is_refused(capture):
    result = cli("analyze", "-", "-", input_bytes=capture.read_bytes())
    assert result.returncode == 2 and b"given twice" in result.stderr


def test_garbage_on_standard_input_is_one_line():
    result = cli("analyze", "-", input_bytes=b"not a capture at all" * 10)
    assert result.returncode == 2
    assert result.stderr.decode() == "rstscope: error: stdin: not a pcap or pcapng file: first bytes 6e 6f 74 20\n"


def test_is_read_once(tmp_path, capture):
    fifo = tmp_path / "f"
    os.mkfifo(fifo)
    assert inputs.is_read_once("-") and inputs.is_read_once(fifo) and inputs.is_read_once("/dev/null")
    assert not inputs.is_read_once(capture) and not inputs.is_read_once(tmp_path / "missing")
