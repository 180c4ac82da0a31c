"""Fault injection (issue 10, item 8): real lab and capture runs meeting missing tools, a failing
capture tool, failing clients, signals at several points, SIGKILL, a full disk and read-only
outputs.  Each case asserts the exit status, run.json's status and that the run left nothing:
no namespace, process, tracefs mount or trace instance (FIFO input: tests/test_inputs.py).

Runs are small (2 client loops); the file takes about a minute as root.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from rstscope.lab import cleanup, runner, scenarios, trace
from rstscope.lab.netns import StepFailed
from tests.lab.conftest import root_skip_reason

pytestmark = [pytest.mark.root, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
QUICK = ["--scenario", "close-race", "--loops", "2", "--settle", "0.3"]


@pytest.fixture(autouse=True)
def need_root():
    reason = root_skip_reason()
    if reason:
        pytest.skip(reason)


# ------------------------------------------------------------------------------ helpers


def leftovers(pid: int) -> dict[str, list[str]]:
    """What runs of process ``pid`` (named ``rs-<pid>-<hex>``) still have on the machine."""
    prefix = f"rs-{pid}-"
    netns = sorted(p.name for p in Path("/run/netns").iterdir() if p.name.startswith(prefix)) if Path(
        "/run/netns").is_dir() else []  # fmt: skip
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines() if prefix in line]
    instances = []
    for root in [*trace.TRACEFS_MOUNTS, *cleanup._private_tracefs_mounts()]:
        if (root / "instances").is_dir():
            instances += [p.name for p in (root / "instances").iterdir() if p.name.startswith(prefix)]
    processes = [f"{p}: {argv}" for p, argv, mark, _ in cleanup._processes() if mark.startswith(prefix)]
    return {"netns": netns, "processes": processes, "mounts": mounts, "trace_instances": sorted(set(instances))}


NOTHING = {"netns": [], "processes": [], "mounts": [], "trace_instances": []}


def assert_nothing_left(pid: int) -> None:
    deadline = time.monotonic() + 5  # processes killed at teardown may take a moment to be reaped
    while leftovers(pid) != NOTHING and time.monotonic() < deadline:
        time.sleep(0.1)
    assert leftovers(pid) == NOTHING


def start(*argv: str, run_root: Path, path: str | None = None) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    if path is not None:
        env["PATH"] = path
    return subprocess.Popen([sys.executable, "-m", "rstscope", *argv, "--run-root", str(run_root)], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def run_json(run_root: Path) -> dict | None:
    found = sorted(run_root.glob("*/run.json"))
    return json.loads(found[-1].read_text()) if found else None


def wait_for(predicate, timeout: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def fake_bin(tmp_path: Path, tools: dict[str, str], *, drop: tuple[str, ...] = ()) -> str:
    """A PATH where ``tools`` are the given shell scripts and ``drop`` are missing."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, script in tools.items():
        (bin_dir / name).write_text("#!/bin/sh\n" + script)
        (bin_dir / name).chmod(0o755)
    keep = []
    for entry in os.environ["PATH"].split(":"):
        if not entry or not Path(entry).is_dir():
            continue
        shadow = tmp_path / f"path{len(keep)}"
        shadow.mkdir()
        for tool in Path(entry).iterdir():
            if tool.name not in drop and tool.name not in tools and not (shadow / tool.name).exists():
                (shadow / tool.name).symlink_to(tool)
        keep.append(str(shadow))
    return ":".join([str(bin_dir), *keep])


@pytest.fixture
def tmpfs(tmp_path):
    """Mount a small tmpfs: ``tmpfs(size, ro=False)``; everything is unmounted at the end."""
    mounted = []

    def make(size: str, *, ro: bool = False) -> Path:
        point = tmp_path / f"fs-{uuid.uuid4().hex[:6]}"
        point.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)], check=True)
        mounted.append(point)
        if ro:
            subprocess.run(["mount", "-o", "remount,ro", str(point)], check=True)
        return point

    yield make
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


@pytest.fixture
def world_writable():
    """A directory the user nobody can write to (pytest's own tmp_path is root's alone)."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="rstscope-nobody-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


# ------------------------------------------------------------------------------ missing and failing tools


def test_no_capture_tool_on_path_is_a_prerequisite_not_a_scapy_run(tmp_path):
    path = fake_bin(tmp_path, {}, drop=("dumpcap", "tcpdump"))
    proc = start("lab", *QUICK, run_root=tmp_path / "runs", path=path)
    status, _, err = finish(proc)
    assert status == 4, err
    assert err == (
        "rstscope: error: capture tool 'auto' is not available: install dumpcap (wireshark-common) or tcpdump; "
        "--capture-tool scapy works without them, but drops packets at speed\n"
    )
    assert not (tmp_path / "runs").exists()
    assert_nothing_left(proc.pid)


def test_no_tc_on_path(tmp_path):
    proc = start("lab", *QUICK, run_root=tmp_path / "runs", path=fake_bin(tmp_path, {}, drop=("tc",)))
    status, _, err = finish(proc)
    assert status == 4 and "`tc` is not installed" in err and err.count("\n") == 1
    assert_nothing_left(proc.pid)


def test_capture_tool_that_fails_after_saying_it_captures(tmp_path):
    """dumpcap printing "Capturing on" and then failing (a bad interface, no permission)."""
    fake = (
        "echo \"Capturing on 'x'\" >&2; sleep 0.3; "
        "echo 'dumpcap: The capture session could not be initiated' >&2; exit 2\n"
    )
    proc = start("lab", *QUICK, run_root=tmp_path / "runs", path=fake_bin(tmp_path, {"dumpcap": fake}))
    status, _, err = finish(proc)
    assert status == 1, err
    # found while the clients run, or at the latest when the capture is stopped
    assert "capture exited with 2 while the run went on" in err or "capture exited with 2 before it was stopped" in err
    assert "could not be initiated" in err and err.count("\n") == 1
    run = run_json(tmp_path / "runs")
    assert run["status"] == "failed" and "could not be initiated" in run["error"]
    assert_nothing_left(proc.pid)


def test_capture_tool_that_writes_no_file(tmp_path):
    fake = "echo \"Capturing on 'x'\" >&2; trap 'exit 0' INT TERM; while :; do sleep 0.1; done\n"
    proc = start("lab", *QUICK, run_root=tmp_path / "runs", path=fake_bin(tmp_path, {"dumpcap": fake}))
    status, _, err = finish(proc)
    assert status == 1 and "the capture tool wrote no file (capture.pcapng)" in err, err
    assert run_json(tmp_path / "runs")["status"] == "failed"
    assert_nothing_left(proc.pid)


def test_capture_tool_that_writes_garbage(tmp_path):
    fake = ("while [ $# -gt 0 ]; do [ \"$1\" = -w ] && out=$2; shift; done; echo \"Capturing on 'x'\" >&2; "
            "echo garbage > \"$out\"; trap 'exit 0' INT TERM; while :; do sleep 0.1; done\n")  # fmt: skip
    proc = start("lab", *QUICK, run_root=tmp_path / "runs", path=fake_bin(tmp_path, {"dumpcap": fake}))
    status, _, err = finish(proc)
    assert status == 1 and "the capture is unreadable" in err, err
    assert run_json(tmp_path / "runs")["status"] == "failed"
    assert_nothing_left(proc.pid)


def test_capture_as_an_ordinary_user_fails(world_writable):
    runs = world_writable / "runs"
    env = dict(os.environ, PYTHONPATH=str(REPO), HOME="/tmp")
    result = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m", "rstscope",
         "capture", "--duration", "1", "--no-trace", "--run-root", str(runs)],
        cwd="/", env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "capture exited with" in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1
    assert run_json(runs)["status"] == "failed"


def test_failing_clients_fail_the_run(tmp_path, monkeypatch):
    """Clients that exit with a usage error (2): the run is failed, not "ok with 0 attempts"."""
    broken = lambda *args: ("sh", "-c", "echo 'rstscope: error: bad client option' >&2; exit 2")  # noqa: E731
    monkeypatch.setattr(scenarios, "client_argv", broken)
    options = scenarios.options_for("close-race", port=0, loops=2, settle=0.2)
    with pytest.raises(StepFailed, match=r"\(clients run\) failed: clients exited with 2: rstscope: error: bad"):
        runner.run_lab(options, tmp_path / "runs")
    assert run_json(tmp_path / "runs")["status"] == "failed"
    assert_nothing_left(os.getpid())


# ------------------------------------------------------------------------------ signals


def _interrupt_when(tmp_path: Path, moment, sig=signal.SIGINT, argv=QUICK) -> tuple[int, str, dict | None, int]:
    runs = tmp_path / "runs"
    proc = start("lab", *argv, run_root=runs)
    moment(proc, runs)
    proc.send_signal(sig)
    status, _, err = finish(proc)
    return status, err, run_json(runs), proc.pid


def _after(seconds: float):
    return lambda proc, runs: time.sleep(seconds)


def _loading(proc, runs):
    """Once the interpreter catches SIGINT (before that, no program can: the signal's default action kills
    it, which a loaded machine can make the case 0.15 s after the start), while the command loads."""

    def catches_sigint() -> bool:
        status = Path(f"/proc/{proc.pid}/status").read_text()
        caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
        return bool(caught & (1 << (signal.SIGINT - 1)))

    wait_for(catches_sigint, what="the interpreter's SIGINT handler")
    time.sleep(0.05)


def _clients_running(proc, runs):
    wait_for(lambda: any(p.stat().st_size for p in runs.glob("*/clients.jsonl")), what="the clients")


def _clients_done(proc, runs):
    """After the last client attempt: the window where the capture settles, stops and the results
    are written (issue 10: run.json used to stay "running")."""

    def done() -> bool:
        found = list(runs.glob("*/clients.jsonl"))
        return bool(found) and found[0].read_text().count('"outcome"') >= 2

    wait_for(done, what="the clients to finish")


@pytest.mark.parametrize(
    ("moment", "sig"),
    [
        (_loading, signal.SIGINT),  # while Python and the command load
        (_after(0.6), signal.SIGINT),  # probing, or creating the namespaces
        (_clients_running, signal.SIGINT),
        (_clients_running, signal.SIGTERM),
        (_clients_done, signal.SIGINT),
    ],
    ids=["start-up", "set-up", "clients", "clients-sigterm", "after-clients"],
)
def test_interrupted_anywhere(tmp_path, moment, sig):
    argv = [*QUICK[:-1], "3"] if moment is _clients_done else QUICK  # --settle 3: a window to hit
    status, err, run, pid = _interrupt_when(tmp_path, moment, sig, argv)
    assert "Traceback" not in err
    assert status == 130, err
    assert err.endswith("rstscope: interrupted\n"), err
    if moment in (_clients_running, _clients_done):
        assert run["status"] == "interrupted" and run["ended"] >= run["started"], run
        assert run["executed"], "run.json lists the steps that were done"
    else:  # before the run directory, or with it
        assert run is None or run["status"] == "interrupted", run
    assert_nothing_left(pid)


@pytest.mark.parametrize("where", ["_write_results", "_check_capture", "analyze_into"])
def test_ctrl_c_after_the_steps(tmp_path, monkeypatch, where):
    """Ctrl-C once the steps are done (results, capture check, analysis): run.json says interrupted."""
    real = getattr(runner, where)

    def interrupted(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, where, interrupted)
    with pytest.raises(KeyboardInterrupt):
        runner.run_lab(scenarios.options_for("close-race", port=0, loops=2, settle=0.2), tmp_path / "runs")
    run = run_json(tmp_path / "runs")
    assert run["status"] == "interrupted" and run["executed"]
    assert_nothing_left(os.getpid())


# ------------------------------------------------------------------------------ SIGKILL


def _killed_run(tmp_path: Path) -> tuple[int, dict]:
    runs = tmp_path / "runs"
    proc = start("lab", "--scenario", "close-race", "--loops", "2", "--duration", "30", run_root=runs)
    _clients_running(proc, runs)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = leftovers(proc.pid)
    assert left["netns"] and left["processes"], left  # something to clean up
    return proc.pid, left


def test_sigkill_then_cleanup_removes_everything(tmp_path):
    pid, left = _killed_run(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-m", "rstscope", "lab", "--cleanup"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    for name in left["netns"]:
        assert f"removed namespace {name}" in result.stdout
    for line in left["processes"]:
        assert f"killed process {line.split(':')[0]} " in result.stdout
    for name in left["trace_instances"]:
        assert f"/instances/{name} of dead run" in result.stdout
    for point in left["mounts"]:  # the private tracefs mount, and each namespace's nsfs mount under /run/netns
        assert (f"unmounted tracefs mount {point}" if "-tracefs-" in point else f"removed namespace {Path(point).name}"
                ) in result.stdout  # fmt: skip
    assert_nothing_left(pid)


def test_the_next_run_cleans_up_after_a_killed_one(tmp_path):
    pid, left = _killed_run(tmp_path)
    runs = tmp_path / "next"
    proc = start("lab", *QUICK, run_root=runs)
    status, _, err = finish(proc)
    assert status == 0, err
    assert "cleaned up before the run: " in err
    removed = "\n".join(run_json(runs)["stale_removed"])
    for name in left["netns"]:
        assert f"removed namespace {name}" in removed
    assert_nothing_left(pid)
    assert_nothing_left(proc.pid)


# ------------------------------------------------------------------------------ disks


def test_run_root_on_a_full_disk(tmp_path, tmpfs):
    """Room for run.json, not for the capture: the run fails, run.json says so, nothing is left."""
    root = tmpfs("256k")
    proc = start("lab", "--scenario", "close-race", "--loops", "6", "--settle", "0.3", run_root=root)
    status, _, err = finish(proc)
    assert status in (1, 2), err
    assert err.startswith("rstscope: error: ") and "Traceback" not in err
    run = run_json(root)
    assert run["status"] == "failed", run
    assert_nothing_left(proc.pid)


def _fill(root: Path) -> None:
    with open(root / "filler", "wb") as filler, pytest.raises(OSError):
        filler.write(b"x" * (1 << 20))
        filler.flush()


def test_run_root_with_no_room_at_all(tmp_path, tmpfs):
    root = tmpfs("64k")
    _fill(root)
    proc = start("lab", *QUICK, run_root=root)
    status, _, err = finish(proc)
    assert status == 2 and "No space left on device" in err and err.count("\n") == 1, err
    assert sorted(p.name for p in root.iterdir()) == ["filler"]
    assert_nothing_left(proc.pid)


def test_read_only_run_root(tmp_path, tmpfs):
    root = tmpfs("1m", ro=True)
    for command in (["lab", *QUICK], ["capture", "--duration", "1"]):
        proc = start(*command, run_root=root)
        status, _, err = finish(proc)
        assert status == 2, err
        assert err == f"rstscope: error: run root {root} is not writable: Read-only file system\n"
        assert_nothing_left(proc.pid)


def test_read_only_and_full_outputs(tmp_path, tmpfs):
    """plot, report and analyze -o onto a read-only or full file system: one line, no partial file."""
    from scapy.utils import wrpcap

    from tests import scenarios as conversations

    cap = tmp_path / "c.pcap"
    wrpcap(str(cap), conversations.close_race().packets)
    read_only, full = tmpfs("1m", ro=True), tmpfs("64k")
    _fill(full)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for target in (read_only, full):
        for argv in (
            ["plot", str(cap), "-o", str(target / "plots")],
            ["report", str(cap), "-o", str(target / "r.html")],
            ["analyze", str(cap), "--json", "-o", str(target / "a.json")],
        ):
            result = subprocess.run([sys.executable, "-m", "rstscope", *argv], cwd=REPO, env=env,
                                    capture_output=True, text=True, timeout=120)  # fmt: skip
            assert result.returncode == 2, result.stderr
            assert result.stderr.startswith("rstscope: error: ") and result.stderr.count("\n") == 1, result.stderr
            assert "Read-only file system" in result.stderr or "No space left on device" in result.stderr
    assert list(read_only.iterdir()) == []
    assert sorted(p.name for p in full.rglob("*") if p.is_file()) == ["filler"]  # no partial file


# ------------------------------------------------------------------------------ capture around a command


def test_capture_command_exit_status_is_printed_and_returned(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-m", "rstscope", "capture", "--no-trace", "--settle", "0.2",
                             "--run-root", str(tmp_path / "runs2"), "--", "sh", "-c", "exit 3"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 3, result.stderr
    assert "command    `sh -c 'exit 3'` exited with 3" in result.stdout
    run = run_json(tmp_path / "runs2")
    assert run["status"] == "ok" and run["command_rc"] == 3
    ok = subprocess.run([sys.executable, "-m", "rstscope", "capture", "--no-trace", "--settle", "0.2",
                         "--run-root", str(tmp_path / "runs3"), "--", "true"],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert ok.returncode == 0 and "exited with 0" in ok.stdout


def test_capture_with_a_bad_filter_fails(tmp_path):
    proc = start("capture", "--duration", "0.5", "--filter", "tcp and and", run_root=tmp_path / "runs")
    status, _, err = finish(proc)
    assert status == 1 and "Invalid capture filter" in err and err.count("\n") == 1, err
    assert run_json(tmp_path / "runs")["status"] == "failed"
    assert_nothing_left(proc.pid)


# ------------------------------------------------------------------------------ the scapy fallback


def test_scapy_reports_real_drops_and_a_short_capture_is_degraded(tmp_path):
    """scapy only when asked for; its drop count is the kernel's, and a capture missing resets the
    kernel sent makes the run degraded (exit 3) with a warning, whichever way this machine goes."""
    proc = start("lab", "--scenario", "close-race", "--loops", "20", "--settle", "0.5", "--capture-tool", "scapy",
                 run_root=tmp_path / "runs")  # fmt: skip
    status, out, err = finish(proc)
    run = run_json(tmp_path / "runs")
    check = run["capture_check"]
    assert isinstance(run["capture"]["stats"]["dropped"], int)
    short = check["capture_rsts"] < runner.CAPTURE_SHORTFALL * check["expected_rsts"] - runner.CAPTURE_SLACK
    assert run["status"] == ("degraded" if short else "ok")
    assert status == (3 if short else 0), err
    if short:
        assert "the capture missed resets" in err and "install dumpcap or tcpdump" in err
    assert f"the capture holds {check['capture_rsts']} RSTs; the kernel sent {check['kernel_rsts']}" in out
    assert_nothing_left(proc.pid)


def test_scapy_that_cannot_compile_its_filter_exits_1(tmp_path, monkeypatch, capsys):
    """scapy without libpcap (and without tcpdump) cannot compile the capture filter: the sniffer
    says so and exits 1, so the lab's capture step fails instead of an empty "ok" run."""
    import scapy.all  # noqa: F401  (loads conf.L2listen)
    from scapy.config import conf
    from scapy.error import Scapy_Exception

    from rstscope.lab import sniff

    def no_libpcap(**kwargs):
        raise Scapy_Exception("Failed to compile filter expression tcp port 8080 (-1)")

    monkeypatch.setattr(conf, "L2listen", no_libpcap)
    assert sniff.main(["--iface", "lo", "--filter", "tcp port 8080", str(tmp_path / "c.pcapng")]) == 1
    assert capsys.readouterr().err == (
        "sniff: cannot listen on lo: Scapy_Exception: Failed to compile filter expression tcp port 8080 (-1)\n"
    )
    assert not (tmp_path / "c.pcapng").exists()


def test_sniffer_on_a_missing_interface_fails_the_capture_step(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    argv = [sys.executable, "-m", "rstscope.lab.sniff", "--iface", "nosuch0", "--filter", "tcp", str(tmp_path / "c")]
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and result.stderr.startswith("sniff: cannot listen on nosuch0: ")


def test_capture_interrupted_then_killed(tmp_path):
    """`rstscope capture` on the host: Ctrl-C ends it `interrupted`; SIGKILL leaves its capture tool
    and trace instance, which `lab --cleanup` removes."""
    runs = tmp_path / "runs"
    proc = start("capture", "--duration", "30", run_root=runs)
    wait_for(lambda: any(p.stat().st_size for p in runs.glob("*/logs/capture.stderr")), what="the capture")
    proc.send_signal(signal.SIGINT)
    status, _, err = finish(proc)
    assert status == 130 and err.endswith("rstscope: interrupted\n"), err
    assert run_json(runs)["status"] == "interrupted"
    assert_nothing_left(proc.pid)

    runs = tmp_path / "killed"
    proc = start("capture", "--duration", "30", run_root=runs)
    wait_for(lambda: any(p.stat().st_size for p in runs.glob("*/logs/capture.stderr")), what="the capture")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = leftovers(proc.pid)
    assert left["processes"], left  # dumpcap, still capturing for a run that is gone
    assert run_json(runs)["status"] == "running"  # what a killed run leaves: --cleanup says what it was
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-m", "rstscope", "lab", "--cleanup"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0 and "(dumpcap " in result.stdout, result.stdout
    assert_nothing_left(proc.pid)
