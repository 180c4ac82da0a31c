"""The live packet stream: a capture tool writing to a pipe, read into packet chunks as bytes arrive.

dumpcap (else tcpdump) writes pcapng (tcpdump: pcap) to its standard output, one packet at a time.
:class:`PipeStream` hands those bytes to the ordinary capture reader (:func:`rstscope.reader.open_capture`)
so that a short read means "no more bytes yet" rather than the end of a truncated file: each fill of the
reader's window waits for the first bytes, then takes only what is already there.  A reader thread turns
the stream into chunks on a queue (:class:`LiveCapture`), so that the main loop keeps its clock while
no packet comes.
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rstscope.lab.runner import capture_stats
from rstscope.status import ExitStatus, InputError, RstscopeError

TOOLS = ("dumpcap", "tcpdump")
READY = {"dumpcap": "Capturing on", "tcpdump": "listening on"}
LIVE_CHUNK = 8192
"""Records decoded at once: a reader that fell behind catches up in batches whose temporaries stay
near 3 MB (the file reader's 65,536-record batches take about 20 MB, which would show in RSS)."""
CHUNKS_QUEUED = 16
"""Chunks decoded ahead of the engine at most (about 16 MB): when the engine falls behind, the pipe
fills and the capture tool drops packets (and counts them) rather than this process growing."""
START_TIMEOUT_S = 10.0
"""How long the capture tool may take to say it is capturing."""


class CaptureToolError(RstscopeError):
    """The capture tool could not start, or stopped on its own; the message is the tool's."""

    exit_status = ExitStatus.BAD_INPUT


def choose_tool(wanted: str = "auto") -> str:
    """``dumpcap``, else ``tcpdump`` (or the one asked for); InputError when it is not installed."""
    order = TOOLS if wanted == "auto" else (wanted,)
    for tool in order:
        if shutil.which(tool):
            return tool
    need = "dumpcap (wireshark-common) or tcpdump" if wanted == "auto" else wanted
    raise InputError(f"capture tool not found: install {need}")


def check_interface(iface: str) -> None:
    """InputError for an interface this host does not have (``any`` is dumpcap's and tcpdump's all)."""
    if iface != "any" and not Path("/sys/class/net", iface).exists():
        known = ", ".join(sorted(p.name for p in Path("/sys/class/net").iterdir())) or "none"
        raise InputError(f"no such interface: {iface} (this host has: {known})")


def tool_argv(tool: str, iface: str, bpf: str, snaplen: int = 0) -> list[str]:
    """The capture tool writing packets to its standard output, flushed packet by packet."""
    if tool == "dumpcap":
        argv = ["dumpcap", "-q", "-n", "-i", iface, "-w", "-"]
        if bpf:
            argv += ["-f", bpf]
        return argv + (["-s", str(snaplen)] if snaplen else [])
    argv = ["tcpdump", "-i", iface, "-U", "-n", "-w", "-", "-s", str(snaplen or 262144)]
    return argv + ([bpf] if bpf else [])


class PipeStream:
    """A binary stream over a pipe for :class:`rstscope.reader.source.Source`: the first ``readinto`` of a
    fill blocks until bytes come (or the writer closes the pipe: the end), and the reader's next call in
    the same fill returns 0 at once when nothing more is there, which ends the fill short instead of
    waiting for a full block.  ``tee`` (optional) sees every byte read, for the ring."""

    def __init__(self, fd: int, tee: Callable[[bytes], None] | None = None) -> None:
        self._fd = fd
        self._tee = tee
        self._block_next = True
        self.closed = False

    def readinto(self, target) -> int:
        if not self._block_next:
            ready, _, _ = select.select([self._fd], [], [], 0)
            if not ready:
                self._block_next = True
                return 0
        data = os.read(self._fd, len(target))
        target[: len(data)] = data
        # After a partial fill the reader calls again in the same fill: answer that one without waiting.
        self._block_next = len(data) == len(target) or not data
        if data and self._tee is not None:
            self._tee(data)
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(OSError):
                os.close(self._fd)


@dataclass
class StreamEnd:
    """Put on the queue when the stream ended: the reader's warnings and its error, if any."""

    warnings: list[str]
    error: BaseException | None = None


class LiveCapture:
    """The capture tool's process and the reader thread; chunks (or one :class:`StreamEnd`) on ``chunks``."""

    def __init__(self, *, iface: str, bpf: str, tool: str = "auto", snaplen: int = 0,
                 tee: Callable[[bytes], None] | None = None) -> None:  # fmt: skip
        check_interface(iface)
        self.tool = choose_tool(tool)
        self.argv = tool_argv(self.tool, iface, bpf, snaplen)
        self.iface = iface
        self.chunks: queue.Queue = queue.Queue(maxsize=CHUNKS_QUEUED)
        self.records = 0
        """Packet records read so far (the capture's packets seen)."""
        self._tee = tee
        self._proc: subprocess.Popen | None = None
        self._stderr_lines: list[str] = []
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the tool and wait until it captures; CaptureToolError with its message when it cannot."""
        try:
            self._proc = subprocess.Popen(
                self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C in the terminal reaches us; we stop the tool ourselves
            )  # fmt: skip
        except OSError as exc:
            raise CaptureToolError(f"cannot run {self.tool}: {exc.strerror or exc}") from None
        ready = threading.Event()
        threading.Thread(target=self._read_stderr, args=(ready,), daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ready.wait(0.05):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                time.sleep(0.1)  # its last words
                self.stop()
                raise CaptureToolError(f"{self.tool} could not start capturing on {self.iface}: {self.message()}")
        self._thread = threading.Thread(target=self._read_packets, daemon=True)
        self._thread.start()

    def _read_stderr(self, ready: threading.Event) -> None:
        for raw in self._proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                self._stderr_lines.append(line)
                del self._stderr_lines[:-50]
            if READY[self.tool] in line:
                ready.set()

    def _read_packets(self) -> None:
        from rstscope.reader import open_capture

        stream = PipeStream(self._proc.stdout.fileno(), self._tee)
        warnings: list[str] = []
        try:
            capture = open_capture(f"<{self.tool} on {self.iface}>", chunk_packets=LIVE_CHUNK, stream=stream)
            with capture:
                for chunk in capture.chunks():
                    self.records = capture.stats.records
                    self.chunks.put(chunk)
                self.records = capture.stats.records
                warnings = list(capture.stats.warnings)
        except InputError as exc:
            # The tool died before writing a header, or wrote something that is not a capture.
            self.chunks.put(StreamEnd(warnings, exc))
            return
        except BaseException as exc:  # (handed to the main thread, which reports it)
            self.chunks.put(StreamEnd(warnings, exc))
            return
        self.chunks.put(StreamEnd(warnings))

    def poll(self, timeout: float) -> list[np.ndarray | StreamEnd]:
        """The chunks that came within ``timeout`` seconds (all of those already there, at least one wait)."""
        out = []
        try:
            out.append(self.chunks.get(timeout=timeout))
            while True:
                out.append(self.chunks.get_nowait())
        except queue.Empty:
            pass
        return out

    @property
    def stopping(self) -> bool:
        return self._stopping

    def stop(self) -> None:
        """Ask the tool to stop (SIGTERM, then SIGKILL after 5 s); the reader reads to the end."""
        self._stopping = True
        if self._proc is None or self._proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self._proc.send_signal(signal.SIGTERM)
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    def join(self, timeout: float = 5.0) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def message(self) -> str:
        """The tool's last meaningful stderr line (what it said when it failed)."""
        lines = [ln for ln in self._stderr_lines if not ln.startswith(("Capturing on", "File:", "listening on"))]
        rc = self.returncode()
        how = f"exit status {rc}" if rc is not None and rc >= 0 else f"killed by signal {-rc}" if rc else ""
        text = lines[-1] if lines else "no message"
        return f"{text} ({how})" if how else text

    def stats(self) -> dict:
        """Packet and drop counts the tool printed when it stopped (empty before)."""
        return capture_stats("\n".join(self._stderr_lines))
