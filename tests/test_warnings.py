"""Issue 10, item 6: the reader's warnings (truncation, corrupt records) reach every command's output."""

from __future__ import annotations

import io

import pytest
from scapy.utils import wrpcap

from rstscope.cli import Environment, run
from tests import scenarios


@pytest.fixture
def cut_capture(tmp_path):
    whole = tmp_path / "whole.pcap"
    wrpcap(str(whole), scenarios.close_race().packets)
    data = whole.read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[: len(data) - 30])  # the last record is cut short
    return cut


@pytest.mark.parametrize("command", ["analyze", "analyze --json", "analyze --csv", "conns", "conns --zeek",
                                     "conns --json", "plot", "report"])  # fmt: skip
def test_truncation_warning_in_every_command(tmp_path, cut_capture, command):
    argv = [*command.split(), str(cut_capture)]
    if argv[0] == "plot":
        argv += ["-o", str(tmp_path / "plots"), "--format", "png"]
    if argv[0] == "report":
        argv += ["-o", str(tmp_path / "r.html")]
    out, err = io.StringIO(), io.StringIO()
    status = run(argv, Environment(stdout=out, stderr=err, stdout_isatty=False, stderr_isatty=False))
    assert status == 0, err.getvalue()
    warnings = [line for line in err.getvalue().splitlines() if line.startswith("rstscope: warning: ")]
    assert len(warnings) == 1, err.getvalue()
    assert warnings[0].startswith(f"rstscope: warning: {cut_capture}: ") and "record" in warnings[0]


def test_a_warning_once_on_a_terminal(cut_capture):
    """On a terminal the summary lists the warning: not again on stderr (it does when stdout is redirected)."""
    out, err = io.StringIO(), io.StringIO()
    status = run(["analyze", str(cut_capture)], Environment(stdout=out, stderr=err, stdout_isatty=True,
                                                            stderr_isatty=True))  # fmt: skip
    assert status == 0 and "warning" not in err.getvalue()  # (stderr has the progress line)
    assert sum(f"warning: {cut_capture}: " in line for line in out.getvalue().splitlines()) == 1
