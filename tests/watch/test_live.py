"""The live stream: the ordinary reader over a pipe yields packets as their bytes arrive, never waiting
for a full block, and a block cut between two writes is read whole once its end comes."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from rstscope.reader import open_capture, read_all
from rstscope.watch.live import PipeStream, tool_argv

CAPTURE = Path(__file__).resolve().parents[2] / "captures" / "close-race" / "capture.pcapng"


def test_pipe_stream_yields_packets_as_they_come():
    data = CAPTURE.read_bytes()
    table, _ = read_all(CAPTURE)
    read_fd, write_fd = os.pipe()
    cut = len(data) // 2 + 7  # inside a block
    wrote_rest = threading.Event()

    def writer():
        os.write(write_fd, data[:cut])
        time.sleep(1.0)
        wrote_rest.set()
        os.write(write_fd, data[cut:])
        os.close(write_fd)

    thread = threading.Thread(target=writer)
    thread.start()
    seen = []
    tee = bytearray()
    with open_capture("<pipe>", stream=PipeStream(read_fd, tee.extend)) as capture:
        for chunk in capture.chunks():
            seen.append((wrote_rest.is_set(), len(chunk)))
    thread.join()
    assert seen[0][0] is False, "the first packets waited for the rest of the stream"
    assert sum(n for _, n in seen) == len(table)
    assert capture.stats.warnings == []
    assert bytes(tee) == data


def test_tool_argv():
    assert tool_argv("dumpcap", "eth0", "tcp port 80") == ["dumpcap", "-q", "-n", "-i", "eth0", "-w", "-", "-f",
                                                          "tcp port 80"]  # fmt: skip
    assert tool_argv("tcpdump", "eth0", "tcp", 128)[-3:] == ["-s", "128", "tcp"]
