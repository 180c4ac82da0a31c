"""The command line: a thin layer that parses options and calls one command module.

Each command lives in ``rstscope/commands/<name>.py`` and provides ``HELP``
(one line), ``DESCRIPTION`` (help text with examples), ``add_arguments(parser)``
and ``run(args, env) -> ExitStatus``.  Errors become one line on stderr and an
exit status here, and only here.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from rstscope import __version__
from rstscope.status import ExitStatus, RstscopeError

COMMANDS: dict[str, str] = {
    "analyze": "rstscope.commands.analyze",
    "conns": "rstscope.commands.conns",
    "lab": "rstscope.commands.lab",
    "pair": "rstscope.commands.pair",
    "capture": "rstscope.commands.capture",
    "validate": "rstscope.commands.validate",
    "plot": "rstscope.commands.plot",
    "report": "rstscope.commands.report",
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
    when a 1 GB capture is meant to take a second)."""
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
    wanted = {command: COMMANDS[command]} if command in COMMANDS else COMMANDS
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
        command.set_defaults(run=module.run)
    return parser


def run(argv: Sequence[str] | None = None, env: Environment | None = None) -> int:
    """Parse ``argv``, run the command, and return its exit status (never raises for user errors)."""
    env = env or Environment()
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(env, command=next((a for a in argv if not a.startswith("-")), None))
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed its one-line usage error
        return int(exc.code or 0)
    if getattr(args, "run", None) is None:
        parser.print_help(env.stdout)
        return ExitStatus.BAD_INPUT
    try:
        return int(args.run(args, env))
    except (RstscopeError, KeyboardInterrupt, BrokenPipeError) as exc:
        if args.traceback:
            raise
        env.progress_done()
        if isinstance(exc, KeyboardInterrupt):
            env.stderr.write("rstscope: interrupted\n")
            return ExitStatus.INTERRUPTED
        if isinstance(exc, BrokenPipeError):  # `rstscope analyze x | head`: not an error
            return ExitStatus.OK
        env.stderr.write(f"rstscope: error: {exc}\n")
        return exc.exit_status
    except Exception as exc:  # a bug: still one line, with the way to get the traceback
        if args.traceback:
            raise
        env.progress_done()
        env.stderr.write(
            f"rstscope: internal error: {type(exc).__name__}: {exc} (rerun with --traceback and report it)\n"
        )
        return ExitStatus.ERROR


def main() -> None:
    sys.exit(run())
