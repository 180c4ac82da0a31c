"""Where rstscope's large temporary files go.

Tracking keeps memory flat by moving state to temporary files: retired connections' rows, dormant
connections' records, RST rows, a fleet's shard files.  They grow with the capture, not with memory
(measured, 1M packets each: a SYN flood 668 MB of them, short connections 114 MB; one million bare
RSTs 2.8 GB).  On a disk that is the point; on a tmpfs ``/tmp`` (the default on Debian 13, Fedora and
Arch) those files are memory again.

So: a directory the user named in ``TMPDIR`` (or ``TEMP``/``TMP``) is used as it is.  Otherwise, when
the system's temporary directory is a tmpfs and ``/var/tmp`` (kept on disk, by the FHS) is not, the
files go to ``/var/tmp``.
"""

from __future__ import annotations

import functools
import os
import tempfile

MEMORY_FILESYSTEMS = frozenset({"tmpfs", "ramfs"})
FALLBACK = "/var/tmp"


@functools.cache
def directory() -> str | None:
    """The directory for large temporary files, or None for :mod:`tempfile`'s own choice."""
    if any(os.environ.get(name) for name in ("TMPDIR", "TEMP", "TMP")):
        return None
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as f:
            mounts = f.read()
    except OSError:  # not Linux: tempfile's choice
        return None
    return choose(tempfile.gettempdir(), mounts, writable=lambda path: os.access(path, os.W_OK | os.X_OK))


def choose(default: str, mounts: str, *, writable) -> str | None:
    """``FALLBACK`` when ``default`` is on a memory file system and it is not (and can be written), else
    None; ``mounts`` is ``/proc/self/mounts``."""
    if filesystem(default, mounts) not in MEMORY_FILESYSTEMS:
        return None
    if not os.path.isdir(FALLBACK) or filesystem(FALLBACK, mounts) in MEMORY_FILESYSTEMS or not writable(FALLBACK):
        return None
    return FALLBACK


def filesystem(path: str, mounts: str) -> str | None:
    """The type of the file system ``path`` is on: that of the longest mount point above it."""
    path = os.path.realpath(path)
    best, kind = "", None
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind
