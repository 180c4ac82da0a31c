"""The lab, pair, capture and validate commands through the CLI (no root needed)."""

from __future__ import annotations

import json

from rstscope.lab import scenarios
from rstscope.status import ExitStatus
from tests.lab.test_rundir import make_run


def test_lab_list(cli):
    result = cli("lab", "--list")
    assert result.status == ExitStatus.OK
    for name in scenarios.PRESETS:
        assert f"{name}\n" in result.stdout


def test_lab_dry_run_prints_the_plan_without_root(cli):
    result = cli("lab", "--scenario", "backlog", "--dry-run")
    assert result.status == ExitStatus.OK, result.stderr
    assert "ip netns add rs-" in result.stdout and "tcp_abort_on_overflow=1" in result.stdout


def test_lab_loopback_refuses_host_sysctls(cli):
    result = cli("lab", "--scenario", "backlog", "--loopback", "--dry-run")
    assert result.status == ExitStatus.BAD_INPUT
    assert "host's sysctls" in result.stderr and "Traceback" not in result.stderr


def test_lab_bad_close_mode_is_one_line(cli):
    result = cli("lab", "--close", "sometimes", "--dry-run")
    assert result.status == ExitStatus.BAD_INPUT and result.stderr.startswith("rstscope: error: unknown close mode")


def test_pair_client_refused_exits_1_and_summarizes(cli):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = cli("pair", "client", "127.0.0.1", "--port", str(port), "--count", "1")
    assert result.status == ExitStatus.ERROR
    assert json.loads(result.stdout)["outcome"] == "ECONNREFUSED@connect"
    assert "1 attempts: ECONNREFUSED@connect 1" in result.stderr


def test_capture_needs_duration_or_command(cli):
    result = cli("capture")
    assert result.status == ExitStatus.BAD_INPUT and "--duration" in result.stderr


def test_validate_rejects_non_run_dirs(cli, tmp_path):
    result = cli("validate", str(tmp_path))
    assert result.status == ExitStatus.BAD_INPUT and "not a run directory" in result.stderr


def test_validate_a_run_with_a_stored_analysis(cli, tmp_path):
    srv, client = "10.1.2.1:8080", "10.1.2.2:40000"
    analysis = {
        "resets": [{"frame": 3, "time": 10.2, "src": srv, "dst": client, "verdict": "close-race", "connection": 0}],
        "connections": [{"id": 0, "client": client, "server": srv, "start": 10.0}],
    }
    kernel = {"event": "tcp_send_reset", "time": 10.1, "src": srv, "dst": client, "state": "TCP_CLOSE",
              "reason": "TCP_ABORT_ON_CLOSE", "listener": False}  # fmt: skip
    # the client read 9 of 20 bytes: data was in flight, so TCP_ABORT_ON_CLOSE means close-race
    attempt = {"attempt": 1, "client_port": 40000, "t_start": 9.9, "t_end": 10.3, "outcome": "ECONNRESET@read",
               "bytes_read": 9, "bytes_expected": 20}  # fmt: skip
    run = make_run(
        tmp_path / "run",
        run={"trace": {"available": True}},
        analysis_json=json.dumps(analysis),
        kernel_jsonl=json.dumps(kernel) + "\n",
        clients_jsonl=json.dumps(attempt) + "\n",
    )
    result = cli("validate", str(run))
    assert result.status == ExitStatus.OK, result.stderr
    assert "primary agreement  1/1 (100.00%)" in result.stdout
    assert "TCP_ABORT_ON_CLOSE" in result.stdout and "ECONNRESET@read" in result.stdout
    # this analysis predates `origin`: an origin it did not give never agrees
    assert "origin agreement   0/1 (0.00%)" in result.stdout
    data = json.loads(cli("validate", str(run), "--json").stdout)
    assert data["primary"]["agreement"] == 1.0 and data["client"]["agreement"] == 1.0
    assert data["held_out"] is None


def test_validate_needs_runs_or_presets(cli):
    result = cli("validate")
    assert result.status == ExitStatus.BAD_INPUT and "--presets" in result.stderr
    result = cli("validate", "--presets", "close-race,nope")
    assert result.status == ExitStatus.BAD_INPUT and result.stderr.startswith("rstscope: error: unknown preset(s) nope")


def test_validate_scores_held_out_runs_apart(cli, tmp_path):
    srv, client = "10.1.2.1:8080", "10.1.2.2:40000"
    analysis = {
        "resets": [{"frame": 3, "time": 10.2, "src": srv, "dst": client, "verdict": "unknown", "connection": 0}],
        "connections": [{"id": 0, "client": client, "server": srv, "start": 10.0}],
    }
    kernel = {"event": "tcp_send_reset", "time": 10.1, "src": srv, "dst": client, "state": "TCP_CLOSE",
              "reason": "TCP_KEEPALIVE_TIMEOUT", "listener": False}  # fmt: skip
    run = make_run(
        tmp_path / "holdout" / "run",
        run={"trace": {"available": True}},
        analysis_json=json.dumps(analysis),
        kernel_jsonl=json.dumps(kernel) + "\n",
    )
    data = json.loads(cli("validate", str(run), "--json").stdout)
    assert data["primary"]["total"] == 0
    held = data["held_out"]
    assert (held["primary"]["agree"], held["primary"]["total"]) == (0, 1)  # unknown never agrees
    assert held["primary"]["matrix"] == [{"reason": "TCP_KEEPALIVE_TIMEOUT", "verdict": "unknown", "count": 1}]


def test_lab_dry_run_through_the_router(cli):
    result = cli("lab", "--scenario", "firewall-reject", "--dry-run")
    assert result.status == ExitStatus.OK, result.stderr
    assert "-rtr" in result.stdout and "reject with tcp reset" in result.stdout
    routed = cli("lab", "--scenario", "close-race", "--via-router", "--dry-run")
    assert "router forwards (net.ipv4.ip_forward=1)" in routed.stdout


def test_lab_loopback_has_no_router(cli):
    result = cli("lab", "--scenario", "inject", "--loopback", "--dry-run")
    assert result.status == ExitStatus.BAD_INPUT
    assert result.stderr.startswith("rstscope: error: --loopback has no router")
