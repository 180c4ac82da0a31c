"""The thin executor: runs a plan's steps as root and always tears down what they built.

Guarantees: whatever happens after the first step — a failed step, an exception,
Ctrl-C (SIGINT), SIGTERM or SIGHUP — :meth:`Executor.execute` stops every
process it started (by process group, SIGKILL after a grace period), removes the
trace instance (and unmounts tracefs if it mounted it), and runs every ``undo``
in reverse order (deleting the namespaces takes their veth, qdiscs and nftables
rules with them).  Further signals are ignored while tearing down.  The host's
own interfaces and sysctls are never touched: every link, qdisc and sysctl
command runs inside the run's namespaces.

Background processes run in their own session, so a Ctrl-C at the terminal
reaches only rstscope, which then stops them in order (clients, capture,
server) rather than all at once.  Each carries ``RSTSCOPE_RUN=<run name>`` in
its environment, by which ``rstscope.lab.cleanup`` finds it if rstscope is
killed with SIGKILL.

Every exit status is checked: a RUN step must exit 0; a WAIT step's process one
of the step's ``ok_exit`` (and within its timeout); a STOP step's process must
not have died on its own with an error (a capture tool that printed its ready
line, then failed on a bad interface or filter) and must end with 0 or of the
signal it was sent.  Readiness alone is never success.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from rstscope.lab import scenarios, trace
from rstscope.lab.scenarios import Action, Capabilities, LabOptions, Step
from rstscope.status import PrerequisiteError, RstscopeError

GRACE = 3.0
"""Seconds a stopped process gets before SIGKILL."""
RUN_MARK = "RSTSCOPE_RUN"
"""Environment variable set in every process a run starts, to the run's name prefix (``rs-<pid>-<hex>``)."""


class StepFailed(RstscopeError):
    """A step of the plan failed; the message names the step, the command and the fix."""


def probe_capabilities(options: LabOptions, *, need_root: bool = True) -> Capabilities:
    """Check the prerequisites of a lab run and describe the machine; raises PrerequisiteError.

    Called explicitly by the command (never at import): root, ``ip``, ``tc``,
    ``nstat``, a capture tool, and whether netem and tracefs exist.
    """
    problems = []
    if need_root and os.geteuid() != 0:
        problems.append(
            "the lab needs root (CAP_NET_ADMIN to create namespaces, CAP_SYS_ADMIN for tracefs); "
            "run it with sudo, or use `rstscope analyze` on an existing capture"
        )
    tools = ["ip"] if options.loopback else ["ip", "tc"]
    problems += [
        f"`{tool}` is not installed (Debian: apt-get install iproute2)" for tool in tools if not shutil.which(tool)
    ]
    tool = _choose_capture_tool(options.capture_tool)
    if tool is None:
        wanted = options.capture_tool
        problems.append(
            f"capture tool {wanted!r} is not available: install dumpcap (wireshark-common) or tcpdump"
            + ("; --capture-tool scapy works without them, but drops packets at speed" if wanted == "auto" else "")
            if wanted != "scapy"
            else "scapy is not importable: pip install scapy"
        )
    if problems:
        raise PrerequisiteError("; ".join(problems))
    netem = kernel_has_qdisc("netem")
    if options.delay is not None and not netem and not options.loopback:
        raise PrerequisiteError(
            "--delay needs the netem qdisc, which this kernel does not have (no CONFIG_NET_SCH_NETEM); "
            "use --queue to add latency under load, and --loss (nftables) for random loss"
        )
    tracefs_ok = False
    if options.trace:
        tracefs_ok, _ = trace.tracefs_available()
    return Capabilities(
        python=sys.executable,
        project_root=scenarios.default_project_root(),
        capture_tool=tool,
        netem=netem,
        tracefs=tracefs_ok,
    )


def _choose_capture_tool(wanted: str) -> str | None:
    # scapy is never chosen by itself: it keeps a fraction of the packets of a busy run (issue 10)
    order = ("dumpcap", "tcpdump") if wanted == "auto" else (wanted,)
    for tool in order:
        if tool == "scapy":
            try:
                import scapy  # noqa: F401  (only to know it is there)
            except ImportError:
                continue
            return "scapy"
        if shutil.which(tool):
            return tool
    return None


def kernel_has_qdisc(kind: str) -> bool:
    """Whether the kernel config lists ``CONFIG_NET_SCH_<KIND>`` (built in or module).

    Without /proc/config.gz the answer is "maybe": True, and a failing ``tc`` step
    then names the qdisc.
    """
    import gzip

    config = Path("/proc/config.gz")
    if not config.exists():
        return True
    try:
        text = gzip.decompress(config.read_bytes()).decode(errors="replace")
    except OSError:
        return True
    symbol = f"CONFIG_NET_SCH_{kind.upper()}="
    return any(line.startswith(symbol) and not line.endswith("=n") for line in text.splitlines())


def tool_versions(caps: Capabilities) -> dict[str, str]:
    """First line of ``--version`` (or ``-V``) of every tool the run used."""
    commands = {
        "ip": ["ip", "-V"],
        "tc": ["tc", "-V"],
        "nstat": ["nstat", "-V"],
        "ethtool": ["ethtool", "--version"],
        "nft": ["nft", "--version"],
        "dumpcap": ["dumpcap", "--version"],
        "tcpdump": ["tcpdump", "--version"],
    }
    versions = {"python": sys.version.split()[0]}
    for name, argv in commands.items():
        if not shutil.which(argv[0]):
            continue
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            continue
        text = (result.stdout or result.stderr).strip().splitlines()
        if text:
            versions[name] = text[0]
    try:
        import scapy

        versions["scapy"] = scapy.__version__
    except ImportError:
        pass
    return versions


@dataclass(kw_only=True)
class Process:
    name: str
    popen: subprocess.Popen
    stdout_path: Path
    stderr_path: Path
    argv: tuple[str, ...]
    started: float
    stop_signal: str = "SIGTERM"
    killed: bool = False
    """It ignored the stop signal for the grace period and was killed."""
    accounted: bool = False
    """Its end was waited for or caused by a step (WAIT, STOP): not a death in the background."""


@dataclass(kw_only=True)
class Executor:
    """Runs a plan in ``run_dir``; call :meth:`execute` once."""

    run_dir: Path
    trace_instance: str = ""
    progress: object = None
    """Callable taking one line of progress text, or None."""
    records: list[dict] = field(default_factory=list)
    """One dict per executed step (and per teardown action), for run.json."""
    outputs: dict[str, str] = field(default_factory=dict)
    """stdout of RUN steps with an ``output_key``."""
    warnings: list[str] = field(default_factory=list)
    processes: dict[str, Process] = field(default_factory=dict)
    trace_session: trace.TraceSession | None = None
    trace_records: list[dict] = field(default_factory=list)
    trace_stats: dict = field(default_factory=dict)
    trace_error: str | None = None
    interrupted: bool = False
    netns_inodes: list[int] = field(default_factory=list)
    """Inodes of the namespaces created, to find processes that would keep them alive."""
    _undo: list[tuple[int, Step]] = field(default_factory=list)

    # ------------------------------------------------------------------ public

    def execute(self, steps: list[Step]) -> None:
        """Run ``steps`` in order; tear everything down however it ends.  Re-raises failures."""
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        signal.signal(signal.SIGTERM, _raise_interrupt)
        signal.signal(signal.SIGHUP, _raise_interrupt)
        signal.signal(signal.SIGINT, _raise_interrupt)
        try:
            for number, step in enumerate(steps, 1):
                self._say(f"step {number}/{len(steps)}: {step.title}")
                self._run_step(number, step)
        except KeyboardInterrupt:
            self.interrupted = True
            raise
        finally:
            for sig in previous:
                signal.signal(sig, signal.SIG_IGN)
            try:
                self.teardown()
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    def teardown(self) -> None:
        """Stop processes, remove the trace instance, undo steps in reverse.  Idempotent."""
        for name in reversed(list(self.processes)):
            self._stop_process(name, self.processes[name].stop_signal, GRACE, teardown=True)
        if self.trace_session is not None:
            self.trace_session.remove()
            self.warnings += [w for w in self.trace_session.warnings if w not in self.warnings]
            self.trace_session = None
        while self._undo:
            number, step = self._undo.pop()
            started = time.monotonic()
            result = subprocess.run(step.undo, capture_output=True, text=True)
            self.records.append(
                {
                    "teardown": True,
                    "of_step": number,
                    "argv": list(step.undo),
                    "rc": result.returncode,
                    "seconds": round(time.monotonic() - started, 3),
                    "stderr": result.stderr.strip()[-500:],
                }
            )
            if result.returncode != 0:
                self.warnings.append(f"teardown `{step.undo and ' '.join(step.undo)}` failed: {result.stderr.strip()}")

    # ------------------------------------------------------------------ steps

    def _run_step(self, number: int, step: Step) -> None:
        handler = {
            Action.RUN: self._do_run,
            Action.SPAWN: self._do_spawn,
            Action.WAIT: self._do_wait,
            Action.STOP: self._do_stop,
            Action.SLEEP: self._do_sleep,
            Action.TRACE_START: self._do_trace_start,
            Action.TRACE_STOP: self._do_trace_stop,
        }[step.action]
        started = time.monotonic()
        record = {"step": number, "title": step.title, "action": step.action.value, "argv": list(step.argv)}
        self.records.append(record)
        try:
            handler(number, step, record)
        finally:
            record["seconds"] = round(time.monotonic() - started, 3)

    def _fail(self, number: int, step: Step, why: str) -> None:
        command = f" `{step.command_line()}`" if step.argv else ""
        message = f"step {number} ({step.title}){command} failed: {why}"
        if step.fix:
            message += f"; {step.fix}"
        if step.optional:
            self.warnings.append(message)
            return
        raise StepFailed(message)

    def _do_run(self, number: int, step: Step, record: dict) -> None:
        try:
            result = subprocess.run(step.argv, capture_output=True, text=True, timeout=60)
        except FileNotFoundError:
            self._fail(number, step, f"`{step.argv[0]}` is not installed")
            return
        except subprocess.TimeoutExpired:
            self._fail(number, step, "timed out after 60 s")
            return
        record["rc"] = result.returncode
        if result.stderr.strip():
            record["stderr"] = result.stderr.strip()[-500:]
        if result.returncode == 0:
            if step.undo:
                self._undo.append((number, step))
            if step.argv[:3] == ("ip", "netns", "add"):
                inode = netns_inode(step.argv[3])
                if inode:
                    self.netns_inodes.append(inode)
            if step.output_key:
                self.outputs[step.output_key] = result.stdout
            return
        detail = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""
        if "Operation not permitted" in result.stderr or "Permission denied" in result.stderr:
            detail += " (needs CAP_NET_ADMIN)"
        self._fail(number, step, f"exit {result.returncode}: {detail}")

    def _do_spawn(self, number: int, step: Step, record: dict) -> None:
        stdout_path = self.run_dir / (step.stdout or f"logs/{step.process}.stdout")
        stderr_path = self.run_dir / f"logs/{step.process}.stderr"
        try:
            with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
                popen = subprocess.Popen(
                    step.argv,
                    stdout=out,
                    stderr=err,
                    stdin=subprocess.DEVNULL,
                    cwd=self.run_dir,
                    start_new_session=True,
                    env=self._environment(),
                )
        except FileNotFoundError:
            self._fail(number, step, f"`{step.argv[0]}` is not installed")
            return
        self.processes[step.process] = Process(
            name=step.process,
            popen=popen,
            stdout_path=stdout_path,
            stderr_path=stderr_path,
            argv=step.argv,
            started=time.time(),
            stop_signal=step.signal,
        )
        record["pid"] = popen.pid
        if not step.ready:
            return
        deadline = time.monotonic() + (step.timeout or 10.0)
        while time.monotonic() < deadline:
            if step.ready in _read(stdout_path) or step.ready in _read(stderr_path):
                return
            if popen.poll() is not None:
                tail = _read(stderr_path).strip().splitlines()[-3:]
                self._fail(number, step, f"exited with {popen.returncode} before it was ready: {' | '.join(tail)}")
                return
            time.sleep(0.05)
        self._fail(number, step, f"not ready after {step.timeout:g} s (waited for {step.ready!r})")

    def _do_wait(self, number: int, step: Step, record: dict) -> None:
        process = self.processes.get(step.process)
        if process is None:
            return
        deadline = time.monotonic() + step.timeout
        while process.popen.poll() is None:
            if time.monotonic() >= deadline:
                process.accounted = True
                self._stop_process(step.process, "SIGTERM", GRACE)
                record["rc"] = process.popen.returncode
                self._fail(number, step, f"{step.process} still running after {step.timeout:g} s: stopped")
                return
            self._say(f"step {number}: {step.title}: {_progress_of(process)}")
            self._check_background(number, step, but=step.process)
            time.sleep(0.2)
        record["rc"] = rc = process.popen.returncode
        process.accounted = True
        if rc not in step.ok_exit:
            self._fail(number, step, f"{step.process} exited with {rc}{_stderr_tail(process)}")

    def _do_stop(self, number: int, step: Step, record: dict) -> None:
        """Stop a process and check how it ended: a capture tool that died early (a bad interface or
        filter, no permission) or that exits with an error has not captured the run."""
        process = self.processes.get(step.process)
        if process is None:
            return
        ended_early = process.popen.poll() is not None
        rc = record["rc"] = self._stop_process(step.process, step.signal, step.timeout or GRACE)
        if ended_early:
            if rc != 0:
                tail = _stderr_tail(process)
                self._fail(number, step, f"{step.process} exited with {rc} before it was stopped{tail}")
            return
        if process.killed:
            self._fail(number, step, f"{step.process} ignored {step.signal} for {step.timeout or GRACE:g} s: killed")
            return
        signum = getattr(signal, step.signal)
        if rc not in (0, -signum, 128 + signum):  # dying of the signal sent is a normal stop
            self._fail(number, step, f"{step.process} exited with {rc}{_stderr_tail(process)}")

    def _do_sleep(self, number: int, step: Step, record: dict) -> None:
        deadline = time.monotonic() + step.timeout
        while (left := deadline - time.monotonic()) > 0:
            self._check_background(number, step)
            time.sleep(min(0.2, left))

    def _check_background(self, number: int, step: Step, *, but: str = "") -> None:
        """Fail at once when a background process (the capture tool, the server) died with an error
        while the run goes on: waiting out the clients or the capture's duration would be for nothing.
        Raises even for an optional step: what died is not this step's business."""
        for name, process in self.processes.items():
            rc = process.popen.poll()
            if name != but and not process.accounted and rc not in (None, 0):
                raise StepFailed(
                    f"step {number} ({step.title}) failed: {name} exited with {rc} while the run went on"
                    f"{_stderr_tail(process)}"
                )

    def _do_trace_start(self, number: int, step: Step, record: dict) -> None:
        session = trace.TraceSession(name=self.trace_instance)
        self.trace_session = session  # registered before start(): teardown removes a half-made instance
        try:
            session.start()
        except (trace.TraceUnavailable, OSError) as exc:
            self.trace_error = str(exc)
            session.remove()
            self.trace_session = None
            self._fail(number, step, str(exc))
            return
        record["instance"] = str(session.instance)

    def _do_trace_stop(self, number: int, step: Step, record: dict) -> None:
        if self.trace_session is None:
            return
        try:
            self.trace_records, self.trace_stats = self.trace_session.stop()
        except OSError as exc:
            self.trace_error = f"reading the trace failed: {exc}"
            self._fail(number, step, self.trace_error)
        record["records"] = len(self.trace_records)

    # ------------------------------------------------------------------ processes

    def _stop_process(self, name: str, signal_name: str, grace: float, *, teardown: bool = False) -> int | None:
        process = self.processes[name]
        process.accounted = True
        popen = process.popen
        if popen.poll() is None:
            sig = getattr(signal, signal_name)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(popen.pid, sig)
            try:
                popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(popen.pid, signal.SIGKILL)
                popen.wait()
                process.killed = True
                if teardown:
                    self.warnings.append(f"{name} ignored {signal_name} for {grace:g} s: killed")
        # Anything left in its process group (a child of the child) goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(popen.pid, signal.SIGKILL)
        if teardown:
            self.records.append({"teardown": True, "stopped": name, "rc": popen.returncode})
        return popen.returncode

    def _environment(self) -> dict[str, str]:
        """The children's environment, marked with the run's name: ``lab --cleanup`` finds what a
        killed run left running by this mark, in any namespace, whatever the command line."""
        env = dict(os.environ)
        if self.trace_instance:
            env[RUN_MARK] = self.trace_instance
        return env

    def _say(self, text: str) -> None:
        if self.progress is not None:
            self.progress(text)


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _stderr_tail(process: Process, lines: int = 3) -> str:
    tail = [line for line in _read(process.stderr_path).strip().splitlines() if line.strip()][-lines:]
    return f": {' | '.join(tail)}" if tail else ""


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _progress_of(process: Process) -> str:
    """``12 attempts: 5 ECONNRESET@read, 7 ok`` from a client log being written."""
    if process.name != "clients":
        return f"{time.time() - process.started:.0f} s"
    outcomes: dict[str, int] = {}
    for line in _read(process.stdout_path).splitlines():
        marker = '"outcome": "'
        at = line.find(marker)
        if at >= 0:
            word = line[at + len(marker) :].split('"', 1)[0]
            outcomes[word] = outcomes.get(word, 0) + 1
    done = sum(outcomes.values())
    detail = ", ".join(f"{count} {word}" for word, count in sorted(outcomes.items(), key=lambda i: -i[1]))
    return f"{time.time() - process.started:.0f} s, {done} attempts" + (f": {detail}" if detail else "")


def netns_inode(name: str) -> int | None:
    """Inode of a named namespace (to find processes still inside it after it was deleted)."""
    try:
        return os.stat(f"/run/netns/{name}").st_ino
    except OSError:
        return None


def leftovers(prefix: str, *, tokens: tuple[str, ...] = (), netns_inodes: tuple[int, ...] = ()) -> dict:
    """What a run left behind: named namespaces, trace instances and processes.

    A process is a leftover when its command line contains ``prefix`` or one of
    ``tokens`` (the run's device names, server address) as a whole word, or when
    it still sits in one of the run's namespaces (``netns_inodes``): such a process
    keeps a deleted namespace, its veth and qdiscs alive.  Used by the interrupt
    test and by ``rstscope lab --cleanup``.
    """
    found: dict[str, list[str]] = {"netns": [], "trace_instances": [], "processes": []}
    netns_dir = Path("/run/netns")
    if netns_dir.is_dir():
        found["netns"] = sorted(p.name for p in netns_dir.iterdir() if p.name.startswith(prefix))
    for root in trace.TRACEFS_MOUNTS:
        instances = root / "instances"
        if instances.is_dir():
            found["trace_instances"] += sorted(str(p) for p in instances.iterdir() if p.name.startswith(prefix))
    words = (prefix, *tokens)
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            ns = os.stat(proc / "ns" / "net").st_ino
        except OSError:
            continue
        text = [a.decode(errors="replace") for a in argv if a]
        hit = any(any(w == arg or arg.startswith(w + "-") for w in words) for arg in text)
        if hit or ns in netns_inodes:
            found["processes"].append(f"{proc.name}: {' '.join(text)}")
    return found
