"""Fixtures for fleet tests: a capture and its pieces (``editcap -c``), made once per session."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from rstscope.cli import Environment, run
from tests import shortconns

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "captures" / "close-race" / "capture.pcapng"
ADDED = {"file", "file_frame", "last_file", "last_file_frame"}
"""The fields a stitched capture adds to reset and connection rows."""


def rstscope(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = run(list(argv), Environment(stdout=out, stderr=err, stdout_isatty=False, stderr_isatty=False))
    return status, out.getvalue(), err.getvalue()


def document(*argv: str) -> dict:
    status, out, err = rstscope("analyze", "--json", *argv)
    assert status == 0, err
    return json.loads(out)


def without_added(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ADDED} for r in rows]


def split(capture: Path, directory: Path, pieces: int) -> list[Path]:
    """``capture`` cut into ``pieces`` files by ``editcap -c`` (records per file)."""
    if shutil.which("editcap") is None:
        pytest.skip("editcap (Wireshark's tools) not installed")
    records = int(subprocess.run(["capinfos", "-M", "-c", "-T", "-r", str(capture)], capture_output=True,
                                 text=True, check=True).stdout.split()[-1])  # fmt: skip
    directory.mkdir(parents=True, exist_ok=True)
    per = -(-records // pieces)
    subprocess.run(["editcap", "-c", str(per), str(capture), str(directory / f"piece{capture.suffix}")], check=True)
    made = sorted(directory.iterdir())
    assert len(made) == pieces
    return made


@pytest.fixture(scope="session")
def short_capture(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("short") / "short.pcap"
    shortconns.generate(str(path), 3000)
    return path


@pytest.fixture(scope="session")
def short_pieces(short_capture, tmp_path_factory) -> list[Path]:
    return split(short_capture, tmp_path_factory.mktemp("short-pieces"), 5)


@pytest.fixture(scope="session")
def sample_pieces(tmp_path_factory) -> list[Path]:
    return split(SAMPLE, tmp_path_factory.mktemp("sample-pieces"), 5)


@pytest.fixture(scope="session")
def busy_pieces(tmp_path_factory):
    """Enough short connections that the tracker retires idle ones and works under pressure
    (more than LIVE_CLOSED_LIMIT closed connections alive at once)."""
    path = tmp_path_factory.mktemp("busy") / "busy.pcap"
    rng = np.random.default_rng(5)
    cols = shortconns.connections_table(
        shortconns.short_mix(rng, 40_000), shortconns.TEMPLATES, rng, spacing_ns=200_000
    )
    shortconns.write_pcap(str(path), cols)  # 8 s: connections closed over a second ago are quiet enough to retire
    return path, split(path, tmp_path_factory.mktemp("busy-pieces"), 5)
