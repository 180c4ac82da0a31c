"""Finding and removing what killed runs left, and never what live runs own."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from rstscope.lab import cleanup
from rstscope.lab.netns import RUN_MARK
from tests.lab.conftest import root_skip_reason


def dead_pid() -> int:
    """The pid of a process that has just ended (so no run of it can be alive)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    assert not Path(f"/proc/{proc.pid}").exists()
    return proc.pid


def marked_sleeper(mark: str) -> subprocess.Popen:
    return subprocess.Popen(["sleep", "60"], env=dict(os.environ, **{RUN_MARK: mark}))


def wait_listed(proc: subprocess.Popen, items) -> bool:
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        if any(item.kind == "process" and item.name == str(proc.pid) for item in items()):
            return True
        time.sleep(0.05)
    return False


def test_run_names():
    assert cleanup.RUN_NAME.match("rs-123-beef-srv")[1] == "rs-123-beef"
    assert cleanup.RUN_NAME.match("rs-123-beef-tracefs-x1y2")[2] == "123"
    assert cleanup.RUN_NAME.match("rs-123-beef")[1] == "rs-123-beef"
    for other in ("rs-abc-beef-srv", "rs-12-beefy", "docker0", "rs-1-BEEF-cli"):
        assert cleanup.RUN_NAME.match(other) is None


def test_marked_process_of_a_dead_run_is_stale_and_of_a_live_run_is_not():
    stale = marked_sleeper(f"rs-{dead_pid()}-beef")
    live = marked_sleeper(f"rs-{os.getpid()}-cafe")
    try:
        assert wait_listed(stale, cleanup.find_stale)
        found = cleanup.find_stale()
        assert not any(item.name == str(live.pid) for item in found)
        removed = cleanup.remove([item for item in found if item.name == str(stale.pid)])
        assert len(removed) == 1 and removed[0].startswith(f"killed process {stale.pid} (sleep 60) of dead run rs-")
        assert stale.wait(5) == -9
        assert live.poll() is None
    finally:
        for proc in (stale, live):
            proc.kill()
            proc.wait()


@pytest.mark.root
def test_namespaces_trace_instances_and_mounts_of_dead_runs_only(tmp_path):
    reason = root_skip_reason()
    if reason:
        pytest.skip(reason)
    dead = f"rs-{dead_pid()}-beef"
    live = f"rs-{os.getpid()}-cafe"
    created_ns = []
    mount_point = Path(tempfile.mkdtemp(prefix=f"{dead}-tracefs-"))
    procs = []
    try:
        for run in (dead, live):
            for side in ("srv", "cli"):
                subprocess.run(["ip", "netns", "add", f"{run}-{side}"], check=True)
                created_ns.append(f"{run}-{side}")
            subprocess.run(["ip", "-n", f"{run}-srv", "link", "add", f"x{run[-4:]}s", "type", "veth", "peer", "name",
                            f"x{run[-4:]}c", "netns", f"{run}-cli"], check=True)  # fmt: skip
            # an unmarked process inside the namespace: found by the namespace it sits in
            procs.append(subprocess.Popen(["ip", "netns", "exec", f"{run}-srv", "sleep", "60"]))
        subprocess.run(["mount", "-t", "tracefs", "nodev", str(mount_point)], check=True)
        (mount_point / "instances" / dead).mkdir()
        time.sleep(0.3)
        found = cleanup.find_stale()
        kinds = {(item.kind, item.name) for item in found}
        assert ("namespace", f"{dead}-srv") in kinds and ("namespace", f"{dead}-cli") in kinds
        # every tracefs mount shows the same instances: found through one of them (another run's, maybe)
        assert any(kind == "trace instance" and name.endswith(f"/instances/{dead}") for kind, name in kinds)
        assert ("tracefs mount", str(mount_point)) in kinds
        assert any(item.kind == "process" and item.name == str(procs[0].pid) for item in found)
        assert not any(live in item.name or item.name == str(procs[1].pid) for item in found)
        srv = next(item for item in found if item.name == f"{dead}-srv")
        assert srv.detail == f"veth x{dead[-4:]}s"
        lines = cleanup.remove(found)
        assert not any(line.startswith("could not") for line in lines), lines
        assert len(lines) == len(found)
        assert procs[0].wait(5) != 0 and procs[1].poll() is None
        names = set(os.listdir("/run/netns"))
        assert f"{dead}-srv" not in names and f"{live}-srv" in names
        assert str(mount_point) not in Path("/proc/mounts").read_text() and not mount_point.exists()
        assert cleanup.find_stale() == []
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        for name in created_ns:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        if str(mount_point) in Path("/proc/mounts").read_text():
            (mount_point / "instances" / dead).rmdir()
            subprocess.run(["umount", str(mount_point)])
        if mount_point.exists():
            mount_point.rmdir()


def test_lab_cleanup_lists_what_it_removed(cli):
    if os.geteuid() != 0:
        pytest.skip("--cleanup needs root")
    stale = marked_sleeper(f"rs-{dead_pid()}-beef")
    try:
        assert wait_listed(stale, cleanup.find_stale)
        result = cli("lab", "--cleanup")
        assert result.status == 0, result.stderr
        assert f"killed process {stale.pid} (sleep 60) of dead run" in result.stdout
        assert result.stdout.splitlines()[-1].endswith("leftovers of dead runs removed")
    finally:
        stale.kill()
        stale.wait()


def test_python_is_this_worktree_inside_namespaces():
    """Code run by the lab (``python -m rstscope`` with PYTHONPATH) imports this worktree."""
    from rstscope.lab import scenarios

    root = scenarios.default_project_root()
    out = subprocess.run([sys.executable, "-c", "import rstscope; print(rstscope.__file__)"],
                         env=dict(os.environ, PYTHONPATH=root), capture_output=True, text=True, cwd="/")  # fmt: skip
    assert out.stdout.strip() == str(Path(root) / "rstscope" / "__init__.py")
