"""The command line: a thin layer that parses options and calls one command module.

Each command lives in ``rstscope/commands/<name>.py`` and provides ``HELP``
(one line), ``DESCRIPTION`` (help text with examples), ``add_arguments(parser)``
and ``run(args, env) -> ExitStatus``.  Errors become one line on stderr and an
exit status here, and only here.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import importlib
import io
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from rstscope import __version__
from rstscope.status import ExitStatus, RstscopeError, exit_process

# Before numpy loads (the commands import it): rstscope does no linear algebra, and OpenBLAS would start a
# thread per core at import, 10-20 ms of every command's start (and their CPU).  Only the command line: a
# program that imports rstscope keeps its own BLAS settings.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

COMMANDS: dict[str, str] = {
    "analyze": "rstscope.commands.analyze",
    "conns": "rstscope.commands.conns",
    "lab": "rstscope.commands.lab",
    "pair": "rstscope.commands.pair",
    "capture": "rstscope.commands.capture",
    "validate": "rstscope.commands.validate",
    "plot": "rstscope.commands.plot",
    "report": "rstscope.commands.report",
    "watch": "rstscope.commands.watch",
}
"""Command name -> module.  A module that does not exist yet is left out of the parser."""


@dataclass(kw_only=True)
class Environment:
    """Everything a command touches outside its arguments, injectable for tests."""

    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    stdout_isatty: bool | None = None
    """Whether stdout is a terminal; None means ask the stream."""
    stderr_isatty: bool | None = None
    clock: callable = time.time
    run_root: Path = field(default_factory=lambda: Path("captures/runs"))
    """Where ``lab`` and ``capture`` create run directories."""
    exit_at_once: bool = False
    """Set when a command whose module says ``EXIT_AT_ONCE`` has returned: :func:`main` then ends the process
    without the interpreter's teardown."""

    def __post_init__(self) -> None:
        if self.stdout_isatty is None:
            self.stdout_isatty = _isatty(self.stdout)
        if self.stderr_isatty is None:
            self.stderr_isatty = _isatty(self.stderr)

    def progress(self, message: str) -> None:
        """One line of progress on stderr (only where stderr is a terminal)."""
        if self.stderr_isatty:
            self.stderr.write(f"\r\x1b[K{message}")
            self.stderr.flush()

    def progress_done(self) -> None:
        if self.stderr_isatty:
            self.stderr.write("\r\x1b[K")
            self.stderr.flush()

    def warn(self, message: str) -> None:
        self.stderr.write(f"rstscope: warning: {message}\n")


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class _Parser(argparse.ArgumentParser):
    """argparse writing to the injected streams, with a one-line usage error that says where to look."""

    def __init__(self, *args, env: Environment | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.env = env or Environment()

    def _print_message(self, message: str, file=None) -> None:
        if message:
            stream = self.env.stderr if file is sys.stderr else self.env.stdout
            stream.write(message)

    def error(self, message: str):
        self.exit(ExitStatus.BAD_INPUT, f"rstscope: error: {message} (see '{self.prog} --help')\n")


def build_parser(env: Environment | None = None, *, command: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``command``, only that command's module is imported (start-up time matters
    when a 1 GB capture is meant to take a second); with ``command=""``, none (``--version``)."""
    parser = _Parser(
        env=env,
        prog="rstscope",
        description="Explains TCP resets: who sent each RST, why, and what was lost.",
        epilog="Run 'rstscope COMMAND --help' for a command's options and examples.",
    )
    parser.add_argument("--version", action="version", version=f"rstscope {__version__}")
    parser.add_argument(
        "--traceback", action="store_true", help="show the Python traceback of an error (for bug reports)"
    )
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=functools.partial(_Parser, env=parser.env)
    )
    wanted = {command: COMMANDS[command]} if command in COMMANDS else {} if command == "" else COMMANDS
    for name, module_name in wanted.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        command = sub.add_parser(
            name,
            help=module.HELP,
            description=module.DESCRIPTION,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(command)
        command.add_argument("--version", action="version", version=f"rstscope {__version__}")  # also after a command
        command.set_defaults(run=module.run, exit_at_once=getattr(module, "EXIT_AT_ONCE", False))
    return parser


def run(argv: Sequence[str] | None = None, env: Environment | None = None) -> int:
    """Parse ``argv``, run the command, and return its exit status (never raises but with ``--traceback``)."""
    env = env or Environment()
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        parser = build_parser(env, command=_command_of(argv))
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # argparse printed its one-line usage error, or the help
            env.stdout.flush()
            return int(exc.code or 0)
        if getattr(args, "run", None) is None:
            parser.print_help(env.stdout)
            env.stdout.flush()
            return ExitStatus.BAD_INPUT
        status = int(args.run(args, env))
        env.stdout.flush()  # a full or closed stdout fails here, not at interpreter exit
        env.exit_at_once = args.exit_at_once
        return status
    except Exception as exc:
        if "--traceback" in argv:
            raise
        return _report(exc, env)
    except KeyboardInterrupt:  # also raised by the lab for SIGTERM and SIGHUP
        if "--traceback" in argv:
            raise
        return _report(KeyboardInterrupt(), env)


def _command_of(argv: list[str]) -> str | None:
    """The command named in ``argv``; ``""`` when the line only asks for the version (no command's module
    is imported then: numpy alone takes 60-90 ms), None when there is none."""
    command = next((a for a in argv if not a.startswith("-")), None)
    if command is None and "--version" in argv and not {"-h", "--help"} & set(argv):
        return ""
    return command


def _report(exc: BaseException, env: Environment) -> int:
    """The one place an exception becomes one line on stderr and an exit status."""
    if isinstance(exc, BrokenPipeError):  # `rstscope analyze x | head`: not an error
        return ExitStatus.OK
    if isinstance(exc, KeyboardInterrupt):
        line, status = "rstscope: interrupted", ExitStatus.INTERRUPTED
    elif isinstance(exc, RstscopeError):
        line, status = f"rstscope: error: {exc}", exc.exit_status
    elif isinstance(exc, OSError):  # the environment (a path, a full disk, a closed stream), not a bug
        where = f"{_printable(exc.filename)}: " if exc.filename is not None else "writing the output: "
        line, status = f"rstscope: error: {where}{exc.strerror or exc}", ExitStatus.BAD_INPUT
    else:  # a bug: still one line, with the way to get the traceback
        line = f"rstscope: internal error: {type(exc).__name__}: {exc} (rerun with --traceback and report it)"
        status = ExitStatus.ERROR
    with contextlib.suppress(OSError, ValueError):  # stderr itself may be closed or full
        env.progress_done()
        env.stderr.write(line + "\n")
        env.stderr.flush()
    return status


def _printable(name) -> str:
    return os.fsdecode(name).encode("utf-8", "backslashreplace").decode("utf-8") if name is not None else ""


class _ClosedStream(io.TextIOBase):
    """Stands in for a standard stream the shell closed (``rstscope ... >&-``): writing fails cleanly."""

    def __init__(self, name: str) -> None:
        self._name = name

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        raise OSError(errno.EBADF, f"standard {self._name} is closed")


def main() -> None:
    """The ``rstscope`` program: streams that cannot encode a file name escape it, and a stdout that
    is full, closed or gone never ends in a traceback at interpreter exit."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is None:
            setattr(sys, name, _ClosedStream("output" if name == "stdout" else "error"))
        else:
            with contextlib.suppress(AttributeError, ValueError):
                stream.reconfigure(errors="surrogateescape" if name == "stdout" else "backslashreplace")
    env = Environment()
    try:
        status = run(env=env)
    except KeyboardInterrupt:  # a second Ctrl-C while the first was being reported
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.write("rstscope: interrupted\n")
        status = ExitStatus.INTERRUPTED
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        _silence_stdout()
    if env.exit_at_once and sys.getprofile() is None and sys.gettrace() is None:
        # A command that finished with every file closed and every process and thread it started gone
        # (EXIT_AT_ONCE in its module) skips the interpreter's teardown: 30 ms of freeing what numpy and
        # the modules hold, a tenth of a small capture's whole run.  Not under a profiler or a coverage
        # tracer: they write what they measured at exit.
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()
        os._exit(status)
    exit_process(status)


def _silence_stdout() -> None:
    """Point fd 1 at /dev/null so that the interpreter's last flush of a broken stdout is quiet."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        if isinstance(sys.stdout, _ClosedStream):
            return
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
