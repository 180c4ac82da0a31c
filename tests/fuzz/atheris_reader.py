"""Demonstrates coverage-guided fuzzing of the capture reader with atheris (libFuzzer for Python).

Run: ``python tests/fuzz/atheris_reader.py -max_total_time=60`` (any libFuzzer flag works; give a
corpus directory to keep what it finds).  Seeds are the committed format captures (``-seed_inputs``).
The property: every input either raises InputError from open_capture or iterates cleanly (see
fuzz_support.check_bytes); anything else is a crash, and libFuzzer saves the input.  Each input is
written to ``$RSTSCOPE_FUZZ_INPUT`` (default ``<tmp>/rstscope-fuzz-<pid>.bin``, left behind: libFuzzer
ends the process with ``_exit``) because the reader reads paths.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))

with atheris.instrument_imports(include=["rstscope"]):
    from fuzz_support import check_bytes, seed_files

INPUT = Path(os.environ.get("RSTSCOPE_FUZZ_INPUT") or Path(tempfile.gettempdir()) / f"rstscope-fuzz-{os.getpid()}.bin")


def test_one_input(data: bytes) -> None:
    check_bytes(data, INPUT)


def main() -> None:
    args = list(sys.argv)
    if not any(a.startswith("-seed_inputs=") for a in args):
        args.append("-seed_inputs=" + ",".join(str(p) for p in seed_files()))
    if not any(a.startswith("-timeout=") for a in args):
        args.append("-timeout=5")
    atheris.Setup(args, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
