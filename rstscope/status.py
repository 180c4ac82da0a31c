"""Exit statuses and the exceptions that map onto them.

Every error a user can cause or meet is one of these exceptions; ``cli.main``
turns it into ``rstscope: error: <message>`` and the exception's exit status,
in exactly one place.
"""

from __future__ import annotations

import enum


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
