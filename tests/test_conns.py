"""rstscope conns: the table, TSV, Zeek conn.log and JSON outputs."""

from __future__ import annotations

import io
import json

import pytest
from scapy.layers.inet import TCP
from scapy.utils import wrpcap

from rstscope.cli import Environment, run
from rstscope.commands.conns import COLUMNS
from rstscope.zeek import CONN_LOG_FIELDS
from tests import scenarios


def rstscope(*argv: str, tty: bool = False) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    env = Environment(stdout=out, stderr=err, stdout_isatty=tty, stderr_isatty=False, clock=lambda: 0.0)
    status = run(list(argv), env)
    return status, out.getvalue(), err.getvalue()


@pytest.fixture
def two_connections(tmp_path):
    """A refused connect (SYN, RST|ACK) and a close race, in one capture."""
    path = tmp_path / "two.pcap"
    refused = scenarios.refused().packets
    close_race = scenarios.close_race().packets
    for p in close_race:  # another client port, ten seconds later
        p.time += 10
        tcp = p[TCP]
        tcp.sport, tcp.dport = (40001, tcp.dport) if tcp.sport == 40000 else (tcp.sport, 40001)
    wrpcap(str(path), refused + close_race)
    return path


def test_tsv_when_piped(two_connections):
    status, out, err = rstscope("conns", str(two_connections))
    assert status == 0 and err == ""
    header, *lines = out.splitlines()
    assert header.split("\t") == list(COLUMNS)
    rows = [dict(zip(COLUMNS, line.split("\t"), strict=True)) for line in lines]
    assert [(r["conn_state"], r["history"], r["verdicts"]) for r in rows] == [
        ("REJ", "Sr", "refused"),
        ("RSTR", "ShADadrrrr", "close-race,echo"),  # each echo RST has a new seq: a new r
    ]
    assert rows[1]["resp_bytes"] == str(5 * scenarios.MSS) and rows[1]["orig_bytes"] == "24"


def test_table_on_a_terminal(two_connections):
    status, out, _ = rstscope("conns", str(two_connections), tty=True)
    assert status == 0
    header = out.splitlines()[0]
    assert "\t" not in out and header.split() == list(COLUMNS)


def test_zeek_conn_log_layout(two_connections):
    status, out, _ = rstscope("conns", str(two_connections), "--zeek")
    assert status == 0
    lines = out.splitlines()
    assert lines[0] == "#separator \\x09"
    fields = next(line for line in lines if line.startswith("#fields")).split("\t")[1:]
    types = next(line for line in lines if line.startswith("#types")).split("\t")[1:]
    assert fields == [name for name, _ in CONN_LOG_FIELDS]
    assert fields[:6] == ["ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p"]
    assert len(types) == len(fields) == 21
    rows = [dict(zip(fields, line.split("\t"), strict=True)) for line in lines if not line.startswith("#")]
    assert [r["conn_state"] for r in rows] == ["REJ", "RSTR"]
    first = rows[0]
    assert (first["id.orig_h"], first["id.orig_p"], first["proto"]) == ("10.0.0.1", "40000", "tcp")
    assert first["service"] == "-" and first["tunnel_parents"] == "-"  # unset, as Zeek writes it
    assert first["uid"].startswith("C") and len(first["uid"]) == 18
    assert lines[-1].startswith("#close")


def test_json_records(two_connections):
    status, out, _ = rstscope("conns", str(two_connections), "--json")
    assert status == 0
    records = json.loads(out)
    assert [(r["conn_state"], r["history"]) for r in records] == [("REJ", "Sr"), ("RSTR", "ShADadrrrr")]


def test_missing_file_is_one_line(tmp_path):
    status, out, err = rstscope("conns", str(tmp_path / "nope.pcap"))
    assert status == 2 and out == ""
    assert err.startswith("rstscope: error:") and err.count("\n") == 1
