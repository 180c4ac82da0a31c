"""Output files written whole or not at all: a temporary file beside the target, renamed at the end.

Every file rstscope writes (JSON, CSV, text, HTML, Markdown, figures, run.json and the other
run-directory files) goes through :func:`atomic_file` or :func:`atomic_path`.  The data is
written to ``.<name>.<random>.tmp`` in the target's directory and renamed over the target only
when writing succeeded, so a full disk, a read-only directory or Ctrl-C leaves either the old
file or no file, never half of one; the temporary file is removed on every failure.

A target that is not a regular file (``/dev/full``, ``/dev/stdout``, a FIFO) cannot be renamed
over: it is written directly, and a failure still becomes one error line.

A large file is handed to the disk while it is written (:class:`_WritingBack`), not all at the end by
the ``fsync`` that precedes the rename.

An ``OSError`` while writing becomes :class:`rstscope.status.InputError` naming the target
("cannot write out.json: No space left on device"): the user chose where output goes.
"""

from __future__ import annotations

import contextlib
import io
import os
import queue
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from rstscope.status import InputError


def _is_special(path: Path) -> bool:
    """True when ``path`` exists and is not a regular file (a device, a FIFO, a socket)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def _describe(exc: OSError) -> str:
    return exc.strerror or str(exc)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """A temporary path to write ``target`` through (for writers that take a file name, e.g.
    matplotlib's ``savefig``); renamed over ``target`` when the block ends without an error."""
    target = Path(target)
    if _is_special(target):
        try:
            yield target
        except OSError as exc:
            raise InputError(f"cannot write {target}: {_describe(exc)}") from None
        return
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise InputError(f"cannot write {target}: {_describe(exc)}") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o644 & ~_umask())
        os.replace(tmp, target)
    except OSError as exc:
        _remove(tmp)
        raise InputError(f"cannot write {target}: {_describe(exc)}") from None
    except BaseException:
        _remove(tmp)
        raise


@contextlib.contextmanager
def atomic_file(target: str | os.PathLike, mode: str = "w", *, encoding: str | None = "utf-8",
                errors: str | None = None) -> Iterator[IO]:  # fmt: skip
    """An open file whose contents replace ``target`` when the block ends without an error.

    ``mode`` is ``"w"`` (text, ``encoding``/``errors`` apply) or ``"wb"``.  The data is flushed
    and fsynced before the rename, so a crash after it leaves the whole file."""
    binary = "b" in mode
    kwargs = {} if binary else {"encoding": encoding, "errors": errors}
    with atomic_path(target) as path:
        direct = path == Path(target)  # not a regular file: written directly, nothing to sync
        try:
            if direct:
                opened = open(path, mode, **kwargs)  # noqa: SIM115
            else:
                buffered = io.BufferedWriter(_WritingBack(path, "w"))
                opened = buffered if binary else io.TextIOWrapper(buffered, **kwargs)
            with opened as stream:
                yield stream
                stream.flush()
                if not direct:
                    os.fsync(stream.fileno())
        except OSError as exc:
            raise InputError(f"cannot write {target}: {_describe(exc)}") from None


WRITEBACK_BYTES = 64 << 20
"""A file being written is handed to the disk each time this many more bytes are written."""


class _WritingBack(io.FileIO):
    """A regular file that asks the kernel to start writing its dirty pages every WRITEBACK_BYTES, and to
    drop those already on disk (``POSIX_FADV_DONTNEED``).  Without it a 1.9 GB document sat in the page
    cache until the final fsync, which then took 1.0-1.7 s with the CPUs idle; with it that fsync takes
    0.03 s, and writing costs less CPU (measured on 1.9 GB: 0.7 s against 1.3-1.8 s), since new pages
    replace dropped ones instead of growing the cache."""

    def __init__(self, path, mode: str) -> None:
        super().__init__(path, mode)
        self._since = 0
        self._advise = getattr(os, "posix_fadvise", None)  # not on macOS: the fsync does it all there

    def write(self, data) -> int:
        n = super().write(data)
        self._since += n
        if self._since >= WRITEBACK_BYTES and self._advise is not None:
            self._since = 0
            try:
                self._advise(self.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
            except OSError:  # advice only: a file system may refuse it
                self._advise = None
        return n


@contextlib.contextmanager
def writes_behind(raw: IO[bytes]) -> Iterator[Callable[..., None]]:
    """A ``write(*parts)`` that hands ``raw.write`` of the parts to a thread of its own, in order, so that
    making the next block overlaps copying this one to the file: a document's rows are encoded by Python
    or by compiled code that releases the GIL, and the kernel's copy into the page cache runs beside it
    (PLAN.md §20).  One write is in flight at a time: ``write`` first waits for the previous one, so
    memory holds two blocks, not a queue of them.  Leaving the block waits for the last write; the first
    error of one is raised by the next ``write`` or then.  On an error in the block, nothing more is
    written."""
    writer = _WriterThread(raw)
    try:
        yield writer.write
    except BaseException:
        writer.abandon()
        raise
    writer.close()


class _WriterThread:
    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._queue: queue.Queue = queue.Queue(1)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="rstscope-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (parts := self._queue.get()) is not None:
            try:
                if self._error is None:
                    for part in parts:
                        self._raw.write(part)
            except BaseException as exc:  # raised in the caller's thread
                self._error = exc
            finally:
                del parts  # the block's memory goes now, not when the next one comes
                self._queue.task_done()

    def write(self, *parts: bytes | bytearray) -> None:
        self._queue.join()  # the previous write is done
        if self._error is not None:
            raise self._error
        self._queue.put(parts)

    def close(self) -> None:
        self._queue.join()
        self._queue.put(None)
        if self._error is not None:
            raise self._error

    def abandon(self) -> None:
        """Stop after the write in progress (a daemon: a write blocked on a stalled pipe does not hold up exit)."""
        with contextlib.suppress(queue.Empty):
            self._queue.get_nowait()
        self._queue.put_nowait(None)


def write_text(target: str | os.PathLike, text: str, *, errors: str | None = None) -> None:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    with atomic_file(target, errors=errors) as stream:
        stream.write(text)


def make_dir(path: str | os.PathLike, *, what: str = "output directory") -> Path:
    """Create ``path`` (and its parents) for output; one error line when it cannot be."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{what} {path} exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create {what} {path}: {_describe(exc)}") from None
    return path


def check_writable_dir(path: str | os.PathLike, *, what: str, create: bool = True) -> Path:
    """Prove a file can be written in ``path`` (root ignores permission bits, not read-only mounts
    or full disks: a real write is the only honest test).  ``create``: make ``path`` first; else
    a missing ``path`` is tested in its nearest existing parent and nothing is created."""
    path = Path(path)
    if create:
        make_dir(path, what=what)
    if path.exists() and not path.is_dir():
        raise InputError(f"{what} {path} exists and is not a directory")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"cannot create {what} {path}: {existing} is not a directory")
    try:
        with tempfile.TemporaryFile(dir=existing) as probe:
            probe.write(b"rstscope")
            probe.flush()
    except OSError as exc:
        raise InputError(f"{what} {path} is not writable: {_describe(exc)}") from None
    return path


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
