"""Large temporary files go to a disk, not to a tmpfs /tmp, unless the user named the directory; when
that directory is full, one line says so, whichever process was writing."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from rstscope import reset_table, scratch
from rstscope.connections import retire
from rstscope.connections.rows import CONN_ROW
from tests import shortconns

REPO = Path(__file__).resolve().parents[1]

MOUNTS_TMPFS = """\
/dev/vda1 / ext4 rw,relatime 0 0
tmpfs /tmp tmpfs rw,nosuid,nodev 0 0
tmpfs /run tmpfs rw 0 0
/dev/vdb1 /srv/my\\040data xfs rw 0 0
"""
MOUNTS_DISK = "/dev/vda1 / ext4 rw,relatime 0 0\ntmpfs /run tmpfs rw 0 0\n"


def test_filesystem_is_the_longest_mount_point_above_the_path():
    assert scratch.filesystem("/tmp", MOUNTS_TMPFS) == "tmpfs"
    assert scratch.filesystem("/tmp/x/y", MOUNTS_TMPFS) == "tmpfs"
    assert scratch.filesystem("/tmpfoo", MOUNTS_TMPFS) == "ext4"  # not under /tmp
    assert scratch.filesystem("/var/tmp", MOUNTS_TMPFS) == "ext4"
    assert scratch.filesystem("/srv/my data/x", MOUNTS_TMPFS) == "xfs"  # escaped space in a mount point


def test_a_tmpfs_tmp_sends_large_files_to_var_tmp():
    writable = lambda path: True  # noqa: E731
    assert scratch.choose("/tmp", MOUNTS_TMPFS, writable=writable) == "/var/tmp"
    assert scratch.choose("/tmp", MOUNTS_DISK, writable=writable) is None  # /tmp on disk: tempfile's choice
    assert scratch.choose("/tmp", MOUNTS_TMPFS, writable=lambda path: False) is None  # /var/tmp not writable
    on_tmpfs_too = MOUNTS_TMPFS + "tmpfs /var/tmp tmpfs rw 0 0\n"
    assert scratch.choose("/tmp", on_tmpfs_too, writable=writable) is None  # nowhere better


@pytest.mark.parametrize("variable", ["TMPDIR", "TEMP", "TMP"])
def test_a_directory_the_user_named_is_kept(monkeypatch, variable):
    for name in ("TMPDIR", "TEMP", "TMP"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, "/somewhere")
    scratch.directory.cache_clear()
    try:
        assert scratch.directory() is None
    finally:
        scratch.directory.cache_clear()


def test_spill_files_are_made_in_the_chosen_directory(tmp_path, monkeypatch):
    """The tracker's spill and the RST rows' file are made where scratch.directory() says."""
    made = []
    original = tempfile.TemporaryFile

    def spy(*args, **kwargs):
        made.append(kwargs.get("dir"))
        return original(*args, **kwargs)

    monkeypatch.setattr(scratch, "directory", lambda: str(tmp_path))
    monkeypatch.setattr(tempfile, "TemporaryFile", spy)
    store = retire.RecordFile(CONN_ROW)
    store.append(np.zeros(retire.SPILL_BATCH, CONN_ROW))  # a whole batch: written out
    assert len(store.take(np.arange(3))) == 3
    spill = reset_table.RowSpill(memory_bytes=10)
    assert spill.read(spill.append(b"x" * 100), 100) == b"x" * 100
    assert made == [str(tmp_path), str(tmp_path)]


def _no_room_line(directory) -> str:
    return (f"no room for temporary files in {directory} (No space left on device): set TMPDIR to a directory "
            f"with more space (README: Temporary space)")  # fmt: skip


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EFBIG])
def test_no_room_is_one_line_naming_the_directory(tmp_path, code):
    with pytest.raises(scratch.Full) as caught, scratch.writing(tmp_path):
        raise OSError(code, os.strerror(code))
    assert str(caught.value) == _no_room_line(tmp_path).replace("No space left on device", os.strerror(code))


def test_other_write_errors_pass_unchanged(tmp_path):
    with pytest.raises(OSError) as caught, scratch.writing(tmp_path):
        raise OSError(errno.EIO, os.strerror(errno.EIO))
    assert caught.value.errno == errno.EIO


def test_records_that_cannot_be_written_are_no_room(monkeypatch):
    """numpy's ``tofile`` reports a short write without errno ("N requested and M written"): the tracker's
    records written to a device that is always full (/dev/full) are no room, not an unexplained error."""
    monkeypatch.setattr(retire.tempfile, "TemporaryFile", lambda **_: open("/dev/full", "w+b"))  # noqa: SIM115
    records = retire.RecordFile(CONN_ROW)
    with pytest.raises(scratch.Full, match=r"no room for temporary files in .*: set TMPDIR"):
        for _ in range(retire.SPILL_BATCH):  # the buffer flushes long before this ends
            records.append(np.zeros(64, CONN_ROW))


def test_reset_rows_that_cannot_be_written_are_no_room(monkeypatch):
    monkeypatch.setattr(reset_table.tempfile, "TemporaryFile", lambda **_: open("/dev/full", "w+b"))  # noqa: SIM115
    spill = reset_table.RowSpill(0)
    with pytest.raises(scratch.Full, match=r"no room for temporary files in .* \(No space left on device\)"):
        for _ in range(1000):
            spill.append(b"x" * 4096)


@pytest.mark.root
@pytest.mark.parametrize("jobs", [[], ["--jobs", "2"]], ids=["one process", "jobs 2"])
def test_a_full_temporary_directory_is_one_line_and_left_empty(tmp_path, tmpfs, jobs):
    """The analysis needs ~30 MB of temporary files (40,000 short connections) and TMPDIR has 2 MB:
    one line, exit 1, and nothing left behind, whether this process or the shard processes write them."""
    capture = tmp_path / "short.pcap"
    shortconns.generate(str(capture), 40_000)
    tiny = tmpfs("2m")
    env = dict(os.environ, PYTHONPATH=str(REPO), TMPDIR=str(tiny))
    result = subprocess.run([sys.executable, "-m", "rstscope", "analyze", str(capture), *jobs], env=env,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert (result.returncode, result.stderr) == (1, f"rstscope: error: {_no_room_line(tiny)}\n")
    assert list(tiny.iterdir()) == []
