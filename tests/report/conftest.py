"""Fixtures of the report tests: the committed lab samples (analysed once per session) and a
scapy-built close race (analysed per test)."""

from __future__ import annotations

from pathlib import Path

import pytest
from scapy.utils import wrpcap

from rstscope.report import sections
from tests import scenarios

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "captures"


def _sample(name: str) -> sections.Loaded:
    path = SAMPLES / name
    if not (path / "run.json").is_file():
        pytest.skip(f"sample run {path} is missing: generate it with `sudo captures/regenerate.sh {name}`")
    return sections.load([path])[0]


@pytest.fixture(scope="session")
def close_race_run() -> sections.Loaded:
    return _sample("close-race")


@pytest.fixture(scope="session")
def backlog_run() -> sections.Loaded:
    return _sample("backlog")


@pytest.fixture(scope="session")
def lingering_run() -> sections.Loaded:
    return _sample("lingering")


@pytest.fixture
def close_race_pcap(tmp_path) -> Path:
    """Server-side close race: 3 segments (4,344 bytes) in flight at the server's RST, then 3 echoes."""
    path = tmp_path / "close-race.pcap"
    wrpcap(str(path), scenarios.close_race().packets)
    return path


@pytest.fixture
def close_race_doc(close_race_pcap) -> dict:
    return sections.load([close_race_pcap])[0].doc
