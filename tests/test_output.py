"""Outputs are written whole or not at all (issue 10, item 4)."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from rstscope import output
from rstscope.status import InputError


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_atomic_file_replaces_only_when_done(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), output.atomic_file(target) as stream:
        stream.write("new, half")
        raise RuntimeError("the writer failed")
    assert target.read_text() == "old" and leftovers(tmp_path) == []
    with output.atomic_file(target) as stream:
        stream.write("new")
    assert target.read_text() == "new" and leftovers(tmp_path) == []


def test_ctrl_c_while_writing_leaves_the_old_file(tmp_path):
    target = tmp_path / "report.html"
    with pytest.raises(KeyboardInterrupt), output.atomic_file(target) as stream:
        stream.write("<html>")
        raise KeyboardInterrupt
    assert not target.exists() and leftovers(tmp_path) == []


def test_atomic_path_for_writers_taking_a_name(tmp_path):
    target = tmp_path / "fig.png"
    with output.atomic_path(target) as tmp:
        assert tmp != target and tmp.parent == tmp_path
        tmp.write_bytes(b"png")
    assert target.read_bytes() == b"png" and leftovers(tmp_path) == []


def test_new_file_gets_ordinary_permissions(tmp_path):
    target = tmp_path / "out.csv"
    output.write_text(target, "a,b\n")
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o644 & ~mask  # not mkstemp's 0600


def test_special_files_are_written_directly():
    with pytest.raises(InputError, match="cannot write /dev/full: No space left on device"):
        output.write_text("/dev/full", "x" * 100_000)
    output.write_text("/dev/null", "fine")


def test_missing_directory_and_non_directory(tmp_path):
    with pytest.raises(InputError, match=r"cannot write .*nodir/x\.json: No such file or directory"):
        output.write_text(tmp_path / "nodir" / "x.json", "{}")
    (tmp_path / "f").write_text("")
    with pytest.raises(InputError, match="exists and is not a directory"):
        output.make_dir(tmp_path / "f")
    with pytest.raises(InputError, match="exists and is not a directory"):
        output.check_writable_dir(tmp_path / "f", what="run root")


@pytest.fixture
def small_tmpfs(tmpfs):
    """A 1 MiB tmpfs, mounted for the test and unmounted after it (root)."""
    return tmpfs("1m")


@pytest.mark.root
def test_full_disk_leaves_no_partial_file(small_tmpfs):
    target = small_tmpfs / "analysis.json"
    target.write_text('{"old": true}')
    with pytest.raises(InputError, match="No space left on device"):
        output.write_text(target, "x" * (4 << 20))
    assert target.read_text() == '{"old": true}'
    assert leftovers(small_tmpfs) == []
    with pytest.raises(InputError, match="No space left on device"):
        output.write_text(small_tmpfs / "new.json", "y" * (4 << 20))
    assert sorted(p.name for p in small_tmpfs.iterdir()) == ["analysis.json"]


@pytest.mark.root
def test_read_only_directory(small_tmpfs):
    subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True)
    with pytest.raises(InputError, match="Read-only file system"):
        output.write_text(small_tmpfs / "x.json", "{}")
    with pytest.raises(InputError, match=r"run root .* is not writable: Read-only file system"):
        output.check_writable_dir(small_tmpfs, what="run root")


@pytest.mark.parametrize("mode", ["w", "wb"])
def test_large_output_is_handed_to_the_disk_while_written(tmp_path, monkeypatch, mode):
    """Every WRITEBACK_BYTES written, the temporary file's pages are handed to the disk (and dropped once
    written), so the fsync before the rename has little left to do; the file is still whole."""
    advised = []
    monkeypatch.setattr(output, "WRITEBACK_BYTES", 10_000)
    monkeypatch.setattr(os, "posix_fadvise", lambda fd, *a: advised.append((os.readlink(f"/proc/self/fd/{fd}"), a)))
    target = tmp_path / "out.json"
    line = "é" * 999 + "\n"  # 1,999 bytes in UTF-8
    with output.atomic_file(target, mode) as stream:
        for _ in range(100):
            stream.write(line if mode == "w" else line.encode())
    assert target.read_bytes() == line.encode() * 100
    assert len(advised) >= 199_900 // (10_000 + 8192)  # one per 10,000 bytes (+ at most one 8 KB buffer)
    assert all(name.endswith(".tmp") and args == (0, 0, os.POSIX_FADV_DONTNEED) for name, args in advised)


def test_writing_to_a_device_gives_no_advice(monkeypatch):
    """A target that is not a regular file (here /dev/null) is written directly, without writeback advice."""
    advised = []
    monkeypatch.setattr(output, "WRITEBACK_BYTES", 10)
    monkeypatch.setattr(os, "posix_fadvise", lambda *args: advised.append(args))
    with output.atomic_file("/dev/null") as stream:
        stream.write("x" * 100_000)
    assert advised == []


class _SlowRaw:
    """A byte stream whose writes take a while and are recorded with the thread that made them."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.writes, self.threads, self.fail_at = [], set(), fail_at

    def write(self, data) -> int:
        time.sleep(0.002)
        if len(self.writes) == self.fail_at:
            raise OSError(28, "No space left on device")
        self.writes.append(bytes(data))
        self.threads.add(threading.get_ident())
        return len(data)


def test_writes_behind_keeps_the_order_and_leaves_the_caller_free():
    raw = _SlowRaw()
    blocks = [bytes([65 + i % 26]) * (i + 1) for i in range(200)]
    with output.writes_behind(raw) as write:
        for block in blocks:
            write(b"|", bytearray(block))
    assert raw.writes == [part for block in blocks for part in (b"|", block)]  # in order, all done at the end
    assert raw.threads and threading.get_ident() not in raw.threads  # made by the writer thread


def test_writes_behind_has_one_write_in_flight():
    """``write`` hands over its block only once the previous write is done: two blocks in memory at most."""
    started, release = threading.Event(), threading.Event()

    class Blocking:
        def write(self, data):
            started.set()
            release.wait(5)
            return len(data)

    with output.writes_behind(Blocking()) as write:
        write(b"first")
        assert started.wait(5)
        second = threading.Thread(target=write, args=(b"second",))
        second.start()
        second.join(0.2)
        assert second.is_alive()  # waiting for the first write
        release.set()
        second.join(5)
        assert not second.is_alive()


@pytest.mark.parametrize("fail_at", [0, 5, 199])
def test_writes_behind_raises_the_first_failed_write(fail_at):
    """A write that fails (a full disk) is raised in the caller by a later write or when the block ends,
    and nothing after it is written."""
    raw = _SlowRaw(fail_at=fail_at)
    with pytest.raises(OSError, match="No space left"), output.writes_behind(raw) as write:
        for i in range(200):
            write(b"x%d" % i)
    assert raw.writes == [b"x%d" % i for i in range(fail_at)]


def test_writes_behind_stops_on_an_error_of_the_caller():
    """An error while making the blocks (Ctrl-C) is the one raised, at once; nothing is written after the write
    in flight."""
    raw = _SlowRaw()
    start = time.perf_counter()
    with pytest.raises(KeyboardInterrupt), output.writes_behind(raw) as write:
        for i in range(50):
            write(b"x%d" % i)
            if i == 4:
                raise KeyboardInterrupt
    assert time.perf_counter() - start < 1.0
    assert raw.writes in ([b"x%d" % i for i in range(4)], [b"x%d" % i for i in range(5)])  # the one in flight
