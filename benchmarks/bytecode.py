"""Compile rstscope's modules to bytecode before a benchmark times the command.

An installed package carries its ``.pyc`` files, and a user's second run finds them written by the
first.  A checkout run with ``PYTHONDONTWRITEBYTECODE=1`` (as some shells and containers set it)
compiles every module from source in every process instead: 0.2 s more per command on this machine,
which the benchmark would report as rstscope's.  ``compileall`` writes the files whatever that
variable says.
"""

from __future__ import annotations

import compileall
from pathlib import Path

import rstscope


def compile_package() -> Path:
    """Write the ``.pyc`` of every module of the rstscope that is imported here; return its directory."""
    package = Path(rstscope.__file__).resolve().parent
    if not compileall.compile_dir(str(package), quiet=1):
        raise SystemExit(f"could not compile {package} to bytecode")
    return package
