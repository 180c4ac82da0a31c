"""Large temporary files go to a disk, not to a tmpfs /tmp, unless the user named the directory."""

from __future__ import annotations

import tempfile

import numpy as np
import pytest

from rstscope import reset_table, scratch
from rstscope.connections import retire
from rstscope.connections.rows import CONN_ROW

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
