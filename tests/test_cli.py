"""The command line as a user meets it: output formats, exit statuses, one-line errors."""

from __future__ import annotations

import csv
import io
import json

import pytest
from scapy.utils import wrpcap

from rstscope import __version__
from rstscope.cli import COMMANDS, Environment, run
from tests import scenarios


def rstscope(*argv: str, tty: bool = False) -> tuple[int, str, str]:
    """Run the CLI in-process; returns (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    status = run(list(argv), Environment(stdout=out, stderr=err, stdout_isatty=tty, stderr_isatty=False))
    return status, out.getvalue(), err.getvalue()


@pytest.fixture
def close_race_pcap(tmp_path):
    path = tmp_path / "close-race.pcap"
    wrpcap(str(path), scenarios.close_race().packets)
    return path


def test_summary_then_table(close_race_pcap):
    status, out, err = rstscope("analyze", str(close_race_pcap))
    assert status == 0 and err == ""
    assert "close-race" in out and "Connections that lost data: 1" in out
    assert "3 echo RSTs not listed" in out
    table = [line for line in out.splitlines() if line.startswith("frame\t")]
    assert table, "a piped table is tab-separated with a header"


def test_json_contract(close_race_pcap):
    status, out, _ = rstscope("analyze", str(close_race_pcap), "--json")
    doc = json.loads(out)
    assert status == 0
    assert set(doc) >= {"captures", "connections", "resets", "listen_queue"}
    required = {"frame", "time", "src", "dst", "sender", "verdict", "primary", "in_flight", "explanation"}
    for reset in doc["resets"]:
        assert required <= set(reset)
    first = doc["resets"][0]
    assert (first["frame"], first["sender"], first["verdict"], first["in_flight"]) == (
        12,
        "server",
        "close-race",
        4344,
    )
    assert first["src"] == "10.0.0.2:8080" and first["dst"] == "10.0.0.1:40000"
    assert [r["primary"] for r in doc["resets"][1:]] == [12, 12, 12]


def test_csv(close_race_pcap, tmp_path):
    target = tmp_path / "out.csv"
    status, out, _ = rstscope("analyze", str(close_race_pcap), "--csv", "-o", str(target))
    rows = list(csv.DictReader(target.open()))
    assert status == 0 and out == ""
    assert [r["verdict"] for r in rows] == ["close-race", "echo", "echo", "echo"]


def test_several_captures(tmp_path, close_race_pcap):
    other = tmp_path / "refused.pcap"
    wrpcap(str(other), scenarios.refused().packets)
    status, out, _ = rstscope("analyze", str(close_race_pcap), str(other), "--json")
    doc = json.loads(out)
    assert status == 0 and len(doc["captures"]) == 2
    assert {(r["capture"], r["verdict"]) for r in doc["resets"]} == {
        (0, "close-race"),
        (0, "echo"),
        (1, "refused"),
    }


@pytest.mark.parametrize(
    "content, argv_extra",
    [
        (None, []),  # missing file
        (b"", []),  # empty file
        (b"<!doctype html><html></html>" * 10, []),  # not a capture
        (
            b"\xd4\xc3\xb2\xa1\x02\x00\x04\x00" + b"\x00" * 8 + b"\xff\xff\x00\x00\x93\x00\x00\x00",
            [],
        ),  # link 147
    ],
    ids=["missing", "empty", "garbage", "unsupported-link"],
)
def test_unreadable_input_is_one_line_and_exit_2(tmp_path, content, argv_extra):
    path = tmp_path / "input.pcap"
    if content is not None:
        path.write_bytes(content)
    status, _, err = rstscope("analyze", str(path), *argv_extra)
    assert status == 2
    assert err.startswith("rstscope: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err


def test_directory_that_is_not_a_run(tmp_path):
    status, _, err = rstscope("analyze", str(tmp_path))
    assert status == 2 and err.count("\n") == 1 and "run directory" in err


def test_bad_option_is_one_line(close_race_pcap):
    status, _, err = rstscope("analyze", str(close_race_pcap), "--frobnicate")
    assert status == 2 and err.count("\n") == 1 and "--frobnicate" in err


def test_truncated_capture_still_analysed(tmp_path, close_race_pcap):
    data = close_race_pcap.read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[: len(data) - 30])  # the last record is cut short
    status, out, err = rstscope("analyze", str(cut), "--json")
    doc = json.loads(out)
    assert status == 0
    assert "warning" in err and err.count("\n") == len(doc["captures"][0]["warnings"])
    assert [r["verdict"] for r in doc["resets"]] == ["close-race", "echo", "echo"]  # the last echo was cut


def test_no_command_prints_help():
    status, out, _ = rstscope()
    assert status == 2 and "analyze" in out


def test_version_imports_no_command():
    """``rstscope --version`` answers without importing the commands (and numpy with them)."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import sys
        from rstscope.cli import main
        sys.argv = ["rstscope", "--version"]
        try:
            main()
        except SystemExit:
            print(sorted(m for m in sys.modules if m in ("numpy", "rstscope.commands.analyze")))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.stdout.splitlines() == [f"rstscope {__version__}", "[]"], done


@pytest.mark.parametrize("command", list(COMMANDS))
def test_version_after_a_command_answers_too(command):
    status, out, err = rstscope(command, "--version")
    assert (status, out.strip(), err) == (0, f"rstscope {__version__}", "")


def test_version_and_help_together_still_lists_the_commands():
    status, out, _ = rstscope("--help", "--version")
    assert status == 0 and "analyze" in out


def test_json_is_streamed_but_complete(tmp_path):
    """--json writes connection rows one at a time; the document equals the one built in memory."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from make_capture import generate

    from rstscope import api
    from rstscope.document import combine

    path = tmp_path / "gen.pcap"
    generate(str(path), 20_000, concurrency=20)
    status, out, _ = rstscope("analyze", str(path), "--json")
    streamed = json.loads(out)
    built = combine([api.analyze(path)])
    assert status == 0 and streamed == built
    assert len(streamed["connections"]) == streamed["summary"]["connections"] > 20


def test_analyze_ends_the_process_at_once_with_its_outputs_whole(tmp_path):
    """``analyze`` ends its process without the interpreter's teardown (EXIT_AT_ONCE): what it wrote to a
    file, to a pipe, through the reader child (a capture of more than 16 MB) and with ``--jobs 2`` is all
    there, as the in-process run gives it, and the exit status is the command's."""
    import subprocess
    import sys

    from tests import differential, shortconns

    big = tmp_path / "big.pcap"
    shortconns.generate(str(big), 40_000)  # past the reader child's 16 MB
    assert big.stat().st_size > 16 << 20
    sample = differential.REPO / "captures" / "close-race" / "capture.pcapng"
    for argv in (["analyze", str(sample)], ["analyze", str(sample), "--csv"], ["analyze", str(big)],
                 ["analyze", str(big), "--json", "--jobs", "2"]):  # fmt: skip
        target = tmp_path / "out"
        child = subprocess.run([sys.executable, "-m", "rstscope", *argv, "-o", str(target)], capture_output=True,
                               cwd=differential.REPO, timeout=300)  # fmt: skip
        piped = subprocess.run([sys.executable, "-m", "rstscope", *argv], capture_output=True, cwd=differential.REPO,
                               timeout=300)  # fmt: skip
        status, out, _ = rstscope(*argv)
        assert child.returncode == piped.returncode == status == 0, child.stderr
        assert target.read_text() == piped.stdout.decode() == out
    missing = subprocess.run([sys.executable, "-m", "rstscope", "analyze", str(tmp_path / "nothing.pcap")],
                             capture_output=True, cwd=differential.REPO, timeout=60)  # fmt: skip
    assert missing.returncode == 2 and missing.stderr.decode().startswith("rstscope: error:")
