"""The executor's guarantees, with harmless commands (no root needed)."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import pytest

from rstscope.lab import netns
from rstscope.lab.netns import Executor, StepFailed
from rstscope.lab.scenarios import Action, Step


def run_steps(tmp_path, steps):
    (tmp_path / "logs").mkdir(exist_ok=True)
    executor = Executor(run_dir=tmp_path)
    return executor, executor.execute(steps)


def test_undo_runs_in_reverse_and_processes_are_stopped(tmp_path):
    log = tmp_path / "undo.log"
    steps = [
        Step(action=Action.RUN, title="a", argv=("true",), undo=("sh", "-c", f"echo a >> {log}")),
        Step(action=Action.RUN, title="b", argv=("true",), undo=("sh", "-c", f"echo b >> {log}")),
        Step(action=Action.SPAWN, title="sleeper", argv=("sleep", "60"), process="sleeper"),
    ]
    executor, _ = run_steps(tmp_path, steps)
    assert log.read_text().split() == ["b", "a"]
    assert executor.processes["sleeper"].popen.returncode is not None


def test_failed_step_names_step_command_and_fix_and_still_tears_down(tmp_path):
    log = tmp_path / "undo.log"
    steps = [
        Step(action=Action.RUN, title="make", argv=("true",), undo=("sh", "-c", f"echo undone >> {log}")),
        Step(action=Action.RUN, title="broken", argv=("sh", "-c", "echo nope >&2; exit 3"), fix="do X"),
        Step(action=Action.RUN, title="never", argv=("sh", "-c", f"echo ran >> {log}")),
    ]
    with pytest.raises(StepFailed) as info:
        run_steps(tmp_path, steps)
    assert str(info.value) == "step 2 (broken) `sh -c 'echo nope >&2; exit 3'` failed: exit 3: nope; do X"
    assert log.read_text().split() == ["undone"]


def test_optional_failure_is_a_warning(tmp_path):
    steps = [Step(action=Action.RUN, title="maybe", argv=("false",), optional=True)]
    executor, _ = run_steps(tmp_path, steps)
    assert executor.warnings and "step 1 (maybe)" in executor.warnings[0]


def test_missing_tool_is_named(tmp_path):
    steps = [Step(action=Action.RUN, title="t", argv=("no-such-tool-rstscope",), fix="install it")]
    with pytest.raises(StepFailed, match="`no-such-tool-rstscope` is not installed; install it"):
        run_steps(tmp_path, steps)


def test_spawn_waits_for_ready_text_and_reports_early_exit(tmp_path):
    ready = Step(
        action=Action.SPAWN, title="p", argv=("sh", "-c", "sleep 0.2; echo READY; sleep 30"), process="p", ready="READY"
    )
    started = time.monotonic()
    run_steps(tmp_path, [ready])
    assert time.monotonic() - started >= 0.2
    dies = Step(action=Action.SPAWN, title="d", argv=("sh", "-c", "echo bad >&2; exit 1"), process="d", ready="X")
    with pytest.raises(StepFailed, match="exited with 1 before it was ready: bad"):
        run_steps(tmp_path, [dies])


def test_sigterm_mid_run_tears_down(tmp_path):
    log = tmp_path / "undo.log"
    steps = [
        Step(action=Action.RUN, title="make", argv=("true",), undo=("sh", "-c", f"echo undone >> {log}")),
        Step(action=Action.SPAWN, title="sleeper", argv=("sleep", "60"), process="sleeper"),
        Step(action=Action.SLEEP, title="long", timeout=30),
    ]
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    executor = Executor(run_dir=tmp_path)
    (tmp_path / "logs").mkdir()
    with pytest.raises(KeyboardInterrupt):
        executor.execute(steps)
    assert executor.interrupted and log.read_text().split() == ["undone"]
    assert executor.processes["sleeper"].popen.returncode is not None
    assert signal.getsignal(signal.SIGTERM) is not netns._raise_interrupt  # handlers restored


def test_leftovers_finds_processes_by_name(tmp_path):
    import subprocess

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "rs-999999-beef-srv"])
    try:
        deadline = time.monotonic() + 3  # a loaded machine may take a moment to show the new process
        while True:
            found = netns.leftovers("rs-999999-beef")
            if any(str(proc.pid) in line for line in found["processes"]) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert any(str(proc.pid) in line for line in found["processes"]), found
    finally:
        proc.kill()
        proc.wait()
    assert netns.leftovers("rs-999999-beef")["processes"] == []


def test_kernel_has_qdisc_reads_the_config():
    assert netns.kernel_has_qdisc("tbf") is True
    assert isinstance(netns.kernel_has_qdisc("netem"), bool)


def test_background_death_fails_at_once(tmp_path):
    """A capture tool that dies with an error while the run goes on fails the run then, not after
    the clients or the capture's duration."""
    steps = [
        Step(
            action=Action.SPAWN,
            title="capture",
            argv=("sh", "-c", "echo up >&2; sleep 0.3; echo bad >&2; exit 2"),
            process="capture",
            ready="up",
        ),
        Step(action=Action.SLEEP, title="capture for 30 s", timeout=30),
    ]
    started = time.monotonic()
    with pytest.raises(StepFailed, match=r"step 2 \(capture for 30 s\) failed: capture exited with 2 while the run"):
        run_steps(tmp_path, steps)
    assert time.monotonic() - started < 5


def test_a_waited_for_failure_is_not_a_background_death(tmp_path):
    """`capture -- CMD`: the command's own failure is judged by its WAIT (optional), not again later."""
    steps = [
        Step(action=Action.SPAWN, title="command", argv=("sh", "-c", "exit 3"), process="command"),
        Step(action=Action.WAIT, title="command runs", process="command", timeout=10, optional=True),
        Step(action=Action.SLEEP, title="settle", timeout=0.5),
    ]
    executor, _ = run_steps(tmp_path, steps)
    assert executor.warnings == ["step 2 (command runs) failed: command exited with 3"]
