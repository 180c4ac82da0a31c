"""Writing and reading run directories."""

from __future__ import annotations

import json

import pytest

from rstscope.lab import rundir
from rstscope.status import InputError


def make_run(path, **files):
    path.mkdir(parents=True, exist_ok=True)
    run = {rundir.MARKER: 1, "options": {"scenario": "close-race"}, "capture": {"file": "capture.pcapng"}}
    run.update(files.pop("run", {}))
    (path / "run.json").write_text(json.dumps(run))
    for name, content in files.items():
        (path / name.replace("_", ".")).write_text(content)
    return path


def test_new_run_dir_is_unique_and_named(tmp_path):
    first = rundir.new_run_dir(tmp_path, "close-race", now=0)
    second = rundir.new_run_dir(tmp_path, "close-race", now=0)
    assert first != second and first.name.endswith("-close-race") and second.name.endswith("-close-race-2")
    assert (first / "logs").is_dir()


def test_is_run_dir_needs_the_marker(tmp_path):
    assert not rundir.is_run_dir(tmp_path)
    (tmp_path / "run.json").write_text("{}")
    assert not rundir.is_run_dir(tmp_path)
    (tmp_path / "run.json").write_text("not json")
    assert not rundir.is_run_dir(tmp_path)
    make_run(tmp_path)
    assert rundir.is_run_dir(tmp_path)


def test_load_run_reads_everything_and_skips_cut_lines(tmp_path):
    make_run(
        tmp_path,
        clients_jsonl='{"attempt": 1, "client_port": 5, "outcome": "ok"}\n{"attempt": 2, "client_p\n',
        kernel_jsonl='{"event": "tcp_send_reset", "time": 1.0}\n',
        nstat_json='{"server": {"counters": {"TcpOutRsts": 1}}}',
        capture_pcapng="",
    )
    run = rundir.load_run(tmp_path)
    assert [a["attempt"] for a in run.clients] == [1]
    assert run.kernel[0]["event"] == "tcp_send_reset"
    assert run.nstat["server"]["counters"]["TcpOutRsts"] == 1
    assert run.capture_path.name == "capture.pcapng"
    assert run.scenario == "close-race" and run.analysis is None


def test_load_run_errors(tmp_path):
    with pytest.raises(InputError, match="not a run directory"):
        rundir.load_run(tmp_path)
    make_run(tmp_path / "r", run={"capture": {"file": None}})
    with pytest.raises(InputError, match="no capture"):
        _ = rundir.load_run(tmp_path / "r").capture_path
