"""Shared test configuration.

Tests that need root, network namespaces or tracefs are marked ``root`` and skip
with a reason where those are missing.  CI sets ``RSTSCOPE_REQUIRE_ROOT_TESTS=1``:
then any skipped ``root`` test fails the run, so CI cannot go green without them.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CORPUS = SHARED / "corpus"

_skipped_root_tests: list[str] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and item.get_closest_marker("root") is not None:
        _skipped_root_tests.append(f"{item.nodeid}: {report.longrepr[-1] if report.longrepr else ''}")


def pytest_sessionfinish(session, exitstatus):
    if os.environ.get("RSTSCOPE_REQUIRE_ROOT_TESTS") == "1" and _skipped_root_tests:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line("")
            reporter.write_line("FAILED: root tests were skipped but RSTSCOPE_REQUIRE_ROOT_TESTS=1:", red=True)
            for line in _skipped_root_tests:
                reporter.write_line(f"  {line}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
def corpus() -> Path:
    if not CORPUS.is_dir():
        pytest.skip(f"reference corpus not found at {CORPUS} (it sits beside the repository as ../shared)")
    return CORPUS


@pytest.fixture
def tmpfs(tmp_path):
    """Mounts tmpfs of a given size for the test, unmounted after it: ``tmpfs("1m")`` (root)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        mount_point = tmp_path / f"tmpfs-{uuid.uuid4().hex[:6]}"
        mount_point.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)], check=True)
        mounted.append(mount_point)
        return mount_point

    yield mount
    for mount_point in mounted:
        if subprocess.run(["umount", str(mount_point)], check=False).returncode != 0:
            subprocess.run(["umount", "--lazy", str(mount_point)], check=True)  # a file still open in it
        mount_point.rmdir()
