"""Helpers for the lab tests: the ``root`` skip reason, and a CLI runner with captured streams."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from rstscope.cli import Environment, run


def root_skip_reason() -> str | None:
    """Why root lab tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, tc, tracefs)"
    if shutil.which("ip") is None:
        return "needs iproute2's ip"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"`ip netns` does not work here: {probe.stderr.strip()}"
    if not (shutil.which("dumpcap") or shutil.which("tcpdump")):
        return "needs dumpcap or tcpdump"
    return None


@pytest.fixture
def need_root():
    reason = root_skip_reason()
    if reason:
        pytest.skip(reason)


class CliResult:
    def __init__(self, status: int, stdout: str, stderr: str) -> None:
        self.status, self.stdout, self.stderr = status, stdout, stderr


@pytest.fixture
def cli(tmp_path: Path):
    """Run ``rstscope ARGS`` in-process; run directories go under tmp_path/runs."""

    def invoke(*args: str) -> CliResult:
        out, err = io.StringIO(), io.StringIO()
        env = Environment(stdout=out, stderr=err, run_root=tmp_path / "runs")
        status = run(list(args), env)
        return CliResult(status, out.getvalue(), err.getvalue())

    return invoke
