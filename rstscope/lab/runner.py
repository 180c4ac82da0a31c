"""One lab run end to end: probe, plan, execute, then write the run directory.

:func:`run_lab` is what ``rstscope lab`` calls.  The run directory is written
even when a step fails or the run is interrupted, so the evidence of a broken
run is not lost; the error is re-raised afterwards for the command line to report.

run.json's ``status`` (rewritten atomically at every change, see :class:`RunRecord`):

=============== ===================================================================
``running``     the run has started (a run.json left so belongs to a killed run)
``ok``          every step succeeded (each exit code checked: the capture tool, the
                clients, the server), the capture file exists and reads as a capture,
                and it holds the resets the kernel says it sent
``degraded``    all of that, but the capture holds clearly fewer RSTs than the kernel
                sent (``capture_check`` gives the numbers): its verdicts miss resets
``failed``      a step failed, the capture is missing or unreadable, or run.json
                itself could not be written (``error`` says which)
``interrupted`` Ctrl-C, SIGTERM or SIGHUP, at any point of the run
=============== ===================================================================
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import random
import re
import shutil
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from rstscope import __version__
from rstscope.lab import cleanup, groundtruth, nstat, rundir, scenarios, trace
from rstscope.lab.netns import Executor, _raise_interrupt, probe_capabilities, tool_versions
from rstscope.lab.scenarios import Capabilities, LabOptions, Names
from rstscope.status import InputError

NAMESPACE_PORT = 8080
"""Server port inside the namespaces (nothing else listens there)."""


CAPTURE_SHORTFALL = 0.9
"""A capture is degraded when it holds fewer than this share of the RSTs the kernel sent (after
those the link's qdiscs dropped), less a slack of :data:`CAPTURE_SLACK` RSTs."""
CAPTURE_SLACK = 2
"""RSTs a capture may miss before the run is called degraded (one sent as the capture stops)."""


@dataclass(kw_only=True)
class RunResult:
    path: Path
    status: str
    """``ok`` or ``degraded`` (failed and interrupted runs raise instead)."""
    run: dict
    analysis: dict | None


ESSENTIAL = (rundir.MARKER, "kind", "status", "error", "scenario", "started", "ended", "duration", "names",
             "pid", "warnings")  # fmt: skip
"""run.json keys kept when a full disk leaves room for nothing more."""


class RunRecord:
    """run.json of one run, saved atomically at every state change.

    When the disk is full the atomic save cannot work (the new copy needs room); the
    run.json already on disk is then rewritten in place, compact (see ``rundir.rewrite_in_place``),
    so that a full disk still leaves ``failed`` rather than ``running``."""

    def __init__(self, path: Path, run: dict) -> None:
        self.path = path
        self.run = run
        self.save_error: str | None = None
        """Why the last save failed (the run then fails with it)."""

    def save(self) -> None:
        try:
            rundir.write_json(self.path / rundir.RUN_JSON, self.run)
        except (InputError, OSError) as exc:
            self.save_error = str(exc)
            self.run["status"] = "failed" if self.run.get("status") in ("ok", "degraded") else self.run["status"]
            self.run.setdefault("error", f"run.json could not be written: {exc}")
            rundir.rewrite_in_place(self.path / rundir.RUN_JSON, self.run, keep=ESSENTIAL)

    def set_status(self, status: str, error: str | None = None) -> None:
        self.run["status"] = status
        if error:
            self.run.setdefault("error", error)
        self.save()


def check_options(options: LabOptions, explicit: set[str]) -> None:
    """Refuse option combinations that would touch the host (``explicit``: options the user gave)."""
    if not options.loopback:
        return
    if options.via_router:
        raise InputError("--loopback has no router: the middlebox presets and --via-router need namespaces")
    host_changing = options.sysctls()
    if host_changing:
        names = ", ".join(f"{k}={v}" for k, v in host_changing.items())
        raise InputError(
            f"--loopback runs in the host's namespace and would change the host's sysctls ({names}); "
            f"run scenario {options.scenario!r} without --loopback"
        )
    shaping = sorted(explicit & {"rate", "queue", "client_rate", "delay", "loss"})
    if shaping:
        raise InputError(
            f"--loopback has no link to shape (--{', --'.join(shaping)} would change the host's lo); drop them"
        )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def prepare(options: LabOptions, caps: Capabilities | None = None) -> tuple[LabOptions, Names, Capabilities]:
    """Resolve the port, probe the machine and pick unique names (no side effects but the probe)."""
    caps = caps or probe_capabilities(options)
    if not options.port:
        options = dataclasses.replace(options, port=free_port() if options.loopback else NAMESPACE_PORT)
    via_router = options.via_router and not options.loopback
    names = Names.make(os.getpid(), random.randrange(65536), loopback=options.loopback, via_router=via_router)
    return options, names, caps


def run_lab(options: LabOptions, run_root: Path, *, progress=None, caps: Capabilities | None = None) -> RunResult:
    """Run one scenario; returns the run directory.  Re-raises step failures and interrupts."""
    with interrupt_signals():
        options, names, caps = prepare(options, caps)
        steps = scenarios.plan(options, names, caps)
        stale = cleanup.remove(cleanup.find_stale()) if os.geteuid() == 0 else []
        path = rundir.new_run_dir(run_root, options.scenario)
        started = time.time()
        addresses = (
            {names.server_ip: "server", names.client_ip: "client"}
            if not options.loopback
            else {names.server_ip: "host"}
        )
        run = _new_run("lab", options.scenario, options.to_json(), names, caps, steps, started, addresses=addresses)
        run["preset"] = scenarios.PRESETS[options.scenario].__dict__ if options.scenario in scenarios.PRESETS else None
        run["server"] = f"{names.server_ip}:{options.port}"
        if stale:
            run["stale_removed"] = stale
        record = _start_record(path, run)
        with _guard(record):
            executor, failure = _execute(record, steps, names, started, progress)
            run["netns_inodes"] = executor.netns_inodes
            _write_results(path, run, executor, options, names, caps, addresses=addresses)
            if failure is None:
                _check_capture(record, kernel_scope="lab" if not options.loopback else "loopback")
            return _finish_run(record, failure, progress)


@contextlib.contextmanager
def interrupt_signals():
    """SIGTERM and SIGHUP raise KeyboardInterrupt for the whole run, like Ctrl-C, so that every
    way of stopping a run ends in the same clean-up and an ``interrupted`` run.json."""
    signals = (signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.getsignal(sig) for sig in signals}
    try:
        for sig in signals:
            signal.signal(sig, _raise_interrupt)
    except ValueError:  # not the main thread: leave the handlers alone
        previous = {}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _start_record(path: Path, run: dict) -> RunRecord:
    """The first run.json; a run root that cannot take it fails before anything else is done."""
    record = RunRecord(path, run)
    try:
        rundir.write_json(path / rundir.RUN_JSON, run)
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)  # nothing was done: leave nothing
        raise
    return record


@contextlib.contextmanager
def _guard(record: RunRecord):
    """Whatever escapes the run (Ctrl-C while results are written, a full disk, a bug) leaves
    run.json ``interrupted`` or ``failed`` with what was done, then goes on up."""
    try:
        yield
    except KeyboardInterrupt:
        if record.run.get("status") in ("running", "ok", "degraded"):
            record.run.setdefault("ended", time.time())
            record.set_status("interrupted")
        raise
    except BaseException as exc:
        if record.run.get("status") in ("running", "ok", "degraded"):
            record.run.setdefault("ended", time.time())
            record.set_status("failed", error=str(exc) or type(exc).__name__)
        raise


def _write_results(
    path: Path, run: dict, executor: Executor, options, names: Names, caps: Capabilities, *, addresses: dict | None
) -> None:
    """Counters, sysctls, qdisc and capture statistics, kernel.jsonl (records of ``addresses``; None: all)."""
    outputs = executor.outputs
    # counters
    counters = {}
    for key, text in outputs.items():
        if key.startswith("nstat.before."):
            side = key.removeprefix("nstat.before.")
            after = outputs.get(f"nstat.after.{side}")
            if after:
                try:
                    counters[side] = nstat.delta(nstat.parse(text), nstat.parse(after))
                except ValueError as exc:
                    run.setdefault("warnings", []).append(f"nstat output of {side} unreadable: {exc}")
    if counters:
        rundir.write_json(path / rundir.NSTAT, counters)
    # sysctls
    run["sysctls"] = {
        key.removeprefix("sysctl."): dict(
            (line.split("=", 1)[0].strip(), line.split("=", 1)[1].strip()) for line in text.splitlines() if "=" in line
        )
        for key, text in outputs.items()
        if key.startswith("sysctl.")
    }
    run["qdisc"] = {
        key.removeprefix("qdisc."): _json_or_text(text) for key, text in outputs.items() if key.startswith("qdisc.")
    }
    qdisc_drops = {
        side: sum(q.get("drops", 0) for q in data if isinstance(q, dict))
        for side, data in run["qdisc"].items()
        if isinstance(data, list)
    }
    if any(qdisc_drops.values()):
        run["warnings"].append(
            f"the link's qdiscs dropped packets ({qdisc_drops}): a lab run can contain real loss (RESETS.md)"
        )
    run["qdisc_drops"] = qdisc_drops
    # capture
    capture_file = scenarios.capture_file_name(caps)
    stderr = _read(path / "logs" / "capture.stderr")
    run["capture"] = {
        "file": capture_file if (path / capture_file).is_file() else None,
        "expected_file": capture_file,
        "tool": caps.capture_tool,
        "interface": names.client_dev,
        "namespace": names.client_ns or None,
        "snaplen": options.snaplen or None,
        "filter": scenarios.capture_filter(options),
        "stats": capture_stats(stderr),
    }
    drops = run["capture"]["stats"].get("dropped")
    if drops:
        run["warnings"].append(f"the capture dropped {drops} packets: verdicts may miss segments")
    # kernel trace
    trace_info: dict = {"available": False}
    if not options.trace:
        trace_info["message"] = "disabled (--no-trace)"
    elif not caps.tracefs:
        trace_info["message"] = trace.tracefs_available()[1]
    elif executor.trace_error:
        trace_info["message"] = executor.trace_error
    elif executor.trace_stats:
        ports = {options.port} if options.loopback else None
        records = trace.keep_for_run(executor.trace_records, addresses, ports)
        rundir.write_jsonl(path / rundir.KERNEL, records)
        trace_info = {"available": True, **executor.trace_stats, "kept": len(records)}
    run["trace"] = trace_info
    if "nft.after" in outputs or "nft.before" in outputs:  # the router's rule counters (--via-router)
        run["nft"] = groundtruth.nft_counters(outputs.get("nft.before"), outputs.get("nft.after"))


def analyze_into(path: Path, run: dict, progress=None) -> dict | None:
    """Run the analyzer on the capture, join the ground truth, write analysis.json.

    A missing or failing analyzer does not lose the run: the error is recorded in
    run.json (``analysis``) and ``rstscope analyze RUN_DIR`` can be run later.
    """
    capture = run.get("capture", {}).get("file")
    if not capture:
        run["analysis"] = {"ok": False, "error": "no capture file"}
        return None
    if progress:
        progress("analyzing the capture")
    try:
        from rstscope import api
    except ImportError as exc:
        run["analysis"] = {"ok": False, "error": f"analyzer unavailable: {exc}"}
        return None
    rundir.write_json(path / rundir.RUN_JSON, run)  # the join reads the trace status and router counters from it
    try:
        doc = api.document(api.analyze(path))  # a run directory: the analyzer joins the ground truth
        if "ground_truth" not in doc:
            doc = groundtruth.join(doc, rundir.load_run(path))
    except Exception as exc:  # the analyzer is another team's code: record, never lose the run
        run["analysis"] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        return None
    rundir.write_json(path / rundir.ANALYSIS, doc)
    run["analysis"] = {"ok": True, "file": rundir.ANALYSIS}
    return doc


def capture_stats(stderr: str) -> dict:
    """Packet and drop counts printed by dumpcap or tcpdump when they stop."""
    stats: dict = {}
    # dumpcap: "Packets received/dropped on interface 'x': 123/0 (pcap:0/dumpcap:0/flushed:0/ps_ifdrop:0)"
    match = re.search(r"received/dropped on interface '[^']*': (\d+)/(\d+)(?: \(([^)]*)\))?", stderr)
    if match:
        stats["received"] = int(match[1])
        stats["dropped"] = int(match[2])
        if match[3]:
            stats["detail"] = dict((k, int(v)) for k, v in re.findall(r"(\w+):(\d+)", match[3]))
    match = re.search(r"Packets captured: (\d+)", stderr)
    if match:
        stats["captured"] = int(match[1])
    # tcpdump: "N packets captured / N packets received by filter / N packets dropped by kernel"
    for key, pattern in (
        ("captured", r"(\d+) packets? captured"),
        ("received", r"(\d+) packets? received by filter"),
        ("dropped", r"(\d+) packets? dropped by kernel"),
    ):
        match = re.search(pattern, stderr)
        if match:
            stats[key] = int(match[1])
    # scapy sniffer (rstscope.lab.sniff): "captured N dropped N|unknown"
    match = re.search(r"captured (\d+) dropped (\d+|unknown)", stderr)
    if match:
        stats.setdefault("captured", int(match[1]))
        if match[2] != "unknown":
            stats.setdefault("dropped", int(match[2]))
    return stats


def _json_or_text(text: str):
    import json

    try:
        return json.loads(text)
    except ValueError:
        return text


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _new_run(kind: str, scenario: str, options_json: dict, names: Names, caps: Capabilities, steps,
             started: float, *, addresses: dict) -> dict:  # fmt: skip
    """run.json as written before anything runs: every option, the plan, the kernel and tool versions."""
    return {
        rundir.MARKER: rundir.LAYOUT_VERSION,
        "kind": kind,
        "status": "running",
        "scenario": scenario,
        "options": options_json,
        "names": dataclasses.asdict(names),
        "addresses": addresses,
        "capabilities": dataclasses.asdict(caps),
        "plan": [step.to_json() for step in steps],
        "started": started,
        "rstscope": __version__,
        "kernel": " ".join(platform.uname()[0:3]) + " " + platform.uname().version,
        "tools": tool_versions(caps),
        "pid": os.getpid(),
    }


def _finish_run(record: RunRecord, failure: BaseException | None, progress) -> RunResult:
    """Analyze a run that went well, write the final run.json, then re-raise what went wrong."""
    path, run = record.path, record.run
    analysis = None
    if run["status"] in ("ok", "degraded"):
        analysis = analyze_into(path, run, progress)
    record.save()
    if failure is not None:
        raise failure
    if record.save_error:
        raise InputError(record.save_error)
    return RunResult(path=path, status=run["status"], run=run, analysis=analysis)


def _execute(record: RunRecord, steps, names: Names, started: float, progress) -> tuple[Executor, BaseException | None]:
    """Run the plan and record how it went (run.json is saved as soon as the status is known); the
    failure is returned to be re-raised once the run directory is complete."""
    path, run = record.path, record.run
    executor = Executor(run_dir=path, trace_instance=names.trace_instance, progress=progress)
    failure: BaseException | None = None
    try:
        executor.execute(steps)
        run["status"] = "ok"
    except KeyboardInterrupt as exc:
        run["status"] = "interrupted"
        failure = exc
    except Exception as exc:  # written to run.json, then re-raised for the command line
        run["status"] = "failed"
        run["error"] = str(exc)
        failure = exc
    run["ended"] = time.time()
    run["duration"] = round(run["ended"] - started, 3)
    run["executed"] = executor.records
    run["warnings"] = list(executor.warnings)
    run["processes"] = {
        name: {"argv": list(p.argv), "pid": p.popen.pid, "rc": p.popen.returncode}
        for name, p in executor.processes.items()
    }
    record.save()
    return executor, failure


def run_capture(
    options: scenarios.CaptureOptions, run_root: Path, *, progress=None, caps: Capabilities | None = None
) -> RunResult:
    """``rstscope capture``: the same run directory, around the user's own programs on the host.

    Kernel records are not filtered by address (the host's traffic is the
    subject); the command's stdout is kept, and if it is ``rstscope pair client``
    output its attempts become clients.jsonl.
    """
    with interrupt_signals():
        lab_like = LabOptions(capture_tool=options.capture_tool, trace=options.trace, loopback=True)
        caps = caps or probe_capabilities(lab_like, need_root=False)
        names = Names.make(os.getpid(), random.randrange(65536), loopback=True)
        steps = scenarios.capture_plan(options, names, caps)
        stale = cleanup.remove(cleanup.find_stale()) if os.geteuid() == 0 else []
        path = rundir.new_run_dir(run_root, options.name)
        started = time.time()
        run = _new_run("capture", options.name, options.to_json(), names, caps, steps, started, addresses={})
        if stale:
            run["stale_removed"] = stale
        record = _start_record(path, run)
        with _guard(record):
            executor, failure = _execute(record, steps, names, started, progress)
            command = executor.processes.get("command")
            if command is not None:
                run["command_rc"] = command.popen.returncode
                attempts = rundir.read_jsonl(path / "command.stdout", keep=lambda r: "attempt" in r and "outcome" in r)
                if attempts:
                    rundir.write_jsonl(path / rundir.CLIENTS, attempts)
            capture_options = LabOptions(snaplen=options.snaplen, trace=options.trace, loopback=True)
            names_for_capture = dataclasses.replace(names, client_dev=options.iface)
            _write_results(path, run, executor, capture_options, names_for_capture, caps, addresses=None)
            run["capture"]["filter"] = options.bpf
            if failure is None:
                _check_capture(record, kernel_scope=None)
            return _finish_run(record, failure, progress)


def _check_capture(record: RunRecord, *, kernel_scope: str | None) -> None:
    """After the steps: the capture file must exist and read as a capture, and (``kernel_scope``
    ``lab`` or ``loopback``) hold the RSTs the kernel sent; sets ``failed`` or ``degraded``.

    ``rstscope capture`` (``kernel_scope`` None) is not cross-checked: its trace and counters are
    host-wide while its capture sees one interface through a filter."""
    from rstscope.lab.netns import StepFailed

    path, run = record.path, record.run
    name = run["capture"].get("file")
    if not name:
        error = f"the capture tool wrote no file ({run['capture']['expected_file']}); see logs/capture.stderr"
        record.set_status("failed", error=error)
        raise StepFailed(error)
    try:
        counted = count_capture(path / name)
    except InputError as exc:
        record.set_status("failed", error=f"the capture is unreadable: {exc}")
        raise StepFailed(f"the capture is unreadable: {exc}") from None
    check: dict = {"capture_packets": counted["packets"], "capture_rsts": counted["rsts"]}
    if counted["warnings"]:
        run.setdefault("warnings", []).extend(f"capture: {w}" for w in counted["warnings"])
    if kernel_scope is not None:
        check.update(_kernel_rsts(path, run, nstat_too=kernel_scope == "lab"))
    run["capture_check"] = check
    shortfall = check.get("expected_rsts")
    if shortfall is not None and counted["rsts"] < CAPTURE_SHORTFALL * shortfall - CAPTURE_SLACK:
        message = (
            f"the capture holds {counted['rsts']} RSTs but the kernel sent {check['kernel_rsts']} "
            f"({check['kernel_source']}; {check.get('qdisc_drops', 0)} packets dropped by the link's qdiscs): "
            "the capture missed resets, so verdicts and agreement are incomplete"
        )
        if run["capabilities"].get("capture_tool") == "scapy":
            message += "; the scapy fallback drops packets at speed: install dumpcap or tcpdump"
        run.setdefault("warnings", []).append(message)
        record.set_status("degraded")
    else:
        record.save()


def count_capture(capture: Path) -> dict:
    """Packets and RST segments in a capture file (raises InputError when it is not a capture)."""
    from rstscope import packets as P
    from rstscope.reader import open_capture

    rsts = 0
    with open_capture(capture) as cap:
        for table in cap.chunks():
            rsts += int(((table["flags"] & P.RST) != 0).sum())
        return {"packets": cap.stats.records, "rsts": rsts, "warnings": list(cap.stats.warnings)}


def _kernel_rsts(path: Path, run: dict, *, nstat_too: bool) -> dict:
    """What the kernel says the run's endpoints sent: tcp_send_reset records kept for the run and
    (namespaces only: the host's counters count everyone) nstat's TcpOutRsts of both namespaces."""
    sources: dict[str, int] = {}
    if run.get("trace", {}).get("available"):
        kernel = rundir.read_jsonl(path / rundir.KERNEL)
        sources["tcp_send_reset"] = sum(1 for r in kernel if r.get("event") == "tcp_send_reset")
    if nstat_too:
        counters = _read_json(path / rundir.NSTAT) or {}
        out_rsts = [side.get("counters", {}).get("TcpOutRsts") for side in counters.values() if isinstance(side, dict)]
        if out_rsts and all(isinstance(n, int) for n in out_rsts):
            sources["TcpOutRsts"] = sum(out_rsts)
    if not sources:
        return {}
    source, sent = max(sources.items(), key=lambda item: item[1])
    drops = sum(run.get("qdisc_drops", {}).values()) if nstat_too else 0
    return {
        "kernel_rsts": sent,
        "kernel_source": source,
        "kernel_counts": sources,
        "qdisc_drops": drops,
        "expected_rsts": max(0, sent - drops),
    }


def _read_json(path: Path):
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
