"""Exit statuses and the exceptions that map onto them.

Every error a user can cause or meet is one of these exceptions; ``cli.main``
turns it into ``rstscope: error: <message>`` and the exception's exit status,
in exactly one place.
"""

from __future__ import annotations

import enum
import sys
from typing import NoReturn


class ExitStatus(enum.IntEnum):
    OK = 0
    ERROR = 1
    """A failure inside rstscope or a lab step that failed (the message names the step)."""
    BAD_INPUT = 2
    """Unreadable capture, wrong path, bad option: the same code argparse uses for usage errors."""
    DEGRADED = 3
    """A lab or capture run finished but its evidence is incomplete: the capture holds clearly fewer
    RSTs than the kernel says it sent (run.json ``status`` is ``degraded``; a warning says by how many)."""
    PREREQUISITE = 4
    """A tool, privilege or kernel feature the command needs is missing (the message says which)."""
    INTERRUPTED = 130
    """Ctrl-C: 128 + SIGINT, as shells report it."""


class RstscopeError(Exception):
    """Base of every error shown to the user as one line."""

    exit_status: ExitStatus = ExitStatus.ERROR


class InputError(RstscopeError):
    """The input cannot be read at all: missing file, not a capture, unknown format."""

    exit_status = ExitStatus.BAD_INPUT


class PrerequisiteError(RstscopeError):
    """Something the command needs is not there (root, a tool, tracefs, a qdisc)."""

    exit_status = ExitStatus.PREREQUISITE


def exit_process(status: int) -> NoReturn:
    """``sys.exit(status)``, also right after a Ctrl-C that was handled.

    CPython remembers a KeyboardInterrupt that escaped any ``exec`` of source text (dataclasses and
    namedtuples build their methods that way, so a Ctrl-C during a lazy import often lands there),
    and when ``python -m`` exits it then dies by SIGINT whatever the status, although the interrupt
    was handled (``_Py_UnhandledKeyboardInterrupt``, set in ``run_eval_code_obj``).  An ``exec`` of
    source text that succeeds clears that flag, so the status is what the process exits with."""
    exec("pass")  # clears the flag (see above)
    sys.exit(status)
