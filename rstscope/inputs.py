"""Read-once inputs: ``-`` (standard input), FIFOs and pipes.

A capture can arrive through a pipe (``tcpdump -w - | rstscope analyze -``) or a FIFO
(``mkfifo p; rstscope analyze p & dumpcap -w p``).  Such an input can be read once:

* ``analyze`` and ``conns`` read every capture in one pass: the stream is handed to the reader
  as it is (:func:`open_stream`), nothing is copied;
* ``plot`` and ``report`` go back to the capture for each figure: a read-once input is first
  copied to a temporary file (:func:`spooled`), which is removed when the command ends.

Nothing blocks without saying why: when a FIFO has no writer yet, or standard input has no data
after half a second, one line on stderr says what rstscope waits for (Ctrl-C stops it).
A terminal as standard input is refused (a capture cannot be typed).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from rstscope import scratch
from rstscope.status import InputError

STDIN = "-"
"""The input name that means standard input."""
STDIN_LABEL = "stdin"
"""How standard input is named in messages, the document and file names."""
NOTICE_AFTER = 0.5
"""Seconds of silence before rstscope says what it is waiting for."""


def is_read_once(name: str | os.PathLike) -> bool:
    """True for ``-`` and for paths that are FIFOs, pipes, character devices or sockets."""
    if str(name) == STDIN:
        return True
    try:
        mode = os.stat(name).st_mode
    except OSError:
        return False  # the reader says what is wrong with it
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISSOCK(mode)


def open_stream(name: str | os.PathLike, env=None) -> tuple[Path, BinaryIO]:
    """Open a read-once input for one pass: (the name to show, a binary stream).

    Waits, saying so on ``env.stderr``, until a FIFO has a writer and data (or its writer has
    closed).  Raises InputError for a terminal on standard input."""
    stderr = env.stderr if env is not None else sys.stderr
    if str(name) == STDIN:
        if _isatty(0):
            raise InputError("standard input is a terminal: pipe a capture in (`tcpdump -w - | rstscope analyze -`)")
        try:
            fd = os.dup(0)
        except OSError:
            raise InputError("standard input is closed: pipe a capture in, or name a file") from None
        label = Path(STDIN_LABEL)
        what = "data on standard input"
    else:
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO opens at once, writer or not
        except OSError as exc:
            raise InputError(f"{name}: {exc.strerror}") from None
        label = Path(name)
        what = f"a writer on {name}" if stat.S_ISFIFO(os.fstat(fd).st_mode) else f"data from {name}"
    try:
        _wait_readable(fd, what, stderr)
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return label, os.fdopen(fd, "rb")


def _wait_readable(fd: int, what: str, stderr) -> None:
    """Block until ``fd`` has data or end of file; say so once when that takes a while.

    A FIFO opened without a writer polls as not ready (not as end of file) until a writer comes
    and writes or goes: exactly the wait wanted."""
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLPRI)
    if poller.poll(NOTICE_AFTER * 1000):
        return
    with contextlib.suppress(OSError, ValueError):
        stderr.write(f"rstscope: waiting for {what} (Ctrl-C to stop)\n")
        stderr.flush()
    poller.poll()


@contextlib.contextmanager
def spooled(names: Sequence[str], env=None) -> Iterator[list[str]]:
    """``names`` with every read-once input replaced by a temporary copy (for commands that read
    a capture more than once); the copies are removed when the block ends."""
    if not any(is_read_once(name) for name in names):
        yield list(names)
        return
    if sum(1 for name in names if str(name) == STDIN) > 1:
        raise InputError("standard input (-) given twice: it can be read only once")
    with tempfile.TemporaryDirectory(prefix="rstscope-input-", dir=scratch.directory()) as directory:
        out = []
        for name in names:
            if not is_read_once(name):
                out.append(name)
                continue
            label, stream = open_stream(name, env)
            target = Path(directory) / (label.name or STDIN_LABEL)
            with stream, open(target, "wb") as copy:
                try:
                    shutil.copyfileobj(stream, copy, 1 << 20)
                except OSError as exc:  # a full temporary directory
                    raise InputError(f"cannot keep a copy of {name} to read it again: {exc.strerror}") from None
            out.append(str(target))
        yield out


def _isatty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False
