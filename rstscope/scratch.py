"""Where rstscope's large temporary files go.

Tracking keeps memory flat by moving state to temporary files: retired connections' rows, dormant
connections' records, RST rows, a fleet's shard files; and ``--json``'s rows encoded while the capture is
tracked (:mod:`rstscope.rowsplit`: about 1 kB a connection, 0.9 GB for one million connections).  They
grow with the capture, not with memory (measured, 1M packets each: a SYN flood 596 MB of them, short
connections 114 MB; one million bare RSTs 2.8 GB).  On a disk that is the point; on a tmpfs ``/tmp``
(the default on Debian 13, Fedora and Arch) those files are memory again.

So: a directory the user named in ``TMPDIR`` (or ``TEMP``/``TMP``) is used as it is.  Otherwise, when
the system's temporary directory is a tmpfs and ``/var/tmp`` (kept on disk, by the FHS) is not, the
files go to ``/var/tmp``.

When that directory fills up, the write that failed becomes :class:`Full`, one line that names the
directory and what to do (:func:`writing`), wherever it happened: in this process, a fleet's decoding
or shard process, a Dask worker.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import tempfile
from collections.abc import Iterator

from rstscope.status import RstscopeError

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


FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
"""A full file system, a quota, a file-size limit (``ulimit -f``): no room, whatever the cause."""


class Full(RstscopeError):
    """No room left for temporary files."""


def is_full(exc: OSError) -> bool:
    """Whether a failed write means there was no room.  ``ndarray.tofile`` reports a short write as
    "N requested and M written", without errno: in a temporary file that is no room too."""
    return exc.errno in FULL_ERRNOS or (exc.errno is None and " requested and " in str(exc))


@contextlib.contextmanager
def writing(path: str | os.PathLike | None = None) -> Iterator[None]:
    """Writes of temporary files: no room becomes :class:`Full`, naming ``path`` (the directory the user
    can change with TMPDIR; by default the one :func:`directory` chooses); other errors pass unchanged."""
    try:
        yield
    except OSError as exc:
        if not is_full(exc):
            raise
        where = os.fspath(path) if path is not None else (directory() or tempfile.gettempdir())
        why = exc.strerror or _short_write(where)
        raise Full(f"no room for temporary files in {where} ({why}): set TMPDIR to a directory with more "
                   f"space (README: Temporary space)") from exc  # fmt: skip


def _short_write(where: str) -> str:
    """Why a write without errno was cut short, as far as the file system tells."""
    try:
        room = os.statvfs(where)
    except OSError:
        return "a write was cut short"
    return "No space left on device" if room.f_bavail * room.f_frsize < 1 << 20 else "a write was cut short"
