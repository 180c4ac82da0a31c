"""One lab run end to end: probe, plan, execute, then write the run directory.

:func:`run_lab` is what ``rstscope lab`` calls.  The run directory is written
even when a step fails or the run is interrupted (``status`` in run.json says
which), so the evidence of a broken run is not lost; the error is re-raised
afterwards for the command line to report.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import random
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from rstscope import __version__
from rstscope.lab import groundtruth, nstat, rundir, scenarios, trace
from rstscope.lab.netns import Executor, probe_capabilities, tool_versions
from rstscope.lab.scenarios import Capabilities, LabOptions, Names
from rstscope.status import InputError

NAMESPACE_PORT = 8080
"""Server port inside the namespaces (nothing else listens there)."""


@dataclass(kw_only=True)
class RunResult:
    path: Path
    status: str
    """``ok``, ``error`` or ``interrupted``."""
    run: dict
    analysis: dict | None


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
    options, names, caps = prepare(options, caps)
    steps = scenarios.plan(options, names, caps)
    path = rundir.new_run_dir(run_root, options.scenario)
    started = time.time()
    addresses = (
        {names.server_ip: "server", names.client_ip: "client"} if not options.loopback else {names.server_ip: "host"}
    )
    run = _new_run("lab", options.scenario, options.to_json(), names, caps, steps, started, addresses=addresses)
    run["preset"] = scenarios.PRESETS[options.scenario].__dict__ if options.scenario in scenarios.PRESETS else None
    run["server"] = f"{names.server_ip}:{options.port}"
    executor, failure = _execute(path, run, steps, names, started, progress)
    run["netns_inodes"] = executor.netns_inodes
    _write_results(path, run, executor, options, names, caps, addresses=addresses)
    return _finish_run(path, run, failure, progress)


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
        "file": capture_file if (path / capture_file).exists() else None,
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
    # scapy sniffer (rstscope.lab.sniff): "captured N dropped N"
    match = re.search(r"captured (\d+) dropped (\d+)", stderr)
    if match:
        stats.setdefault("captured", int(match[1]))
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


def _finish_run(path: Path, run: dict, failure: BaseException | None, progress) -> RunResult:
    """Analyze a run that went well, write the final run.json, then re-raise what went wrong."""
    analysis = None
    if run["status"] == "ok":
        analysis = analyze_into(path, run, progress)
    rundir.write_json(path / rundir.RUN_JSON, run)
    if failure is not None:
        raise failure
    return RunResult(path=path, status=run["status"], run=run, analysis=analysis)


def _execute(
    path: Path, run: dict, steps, names: Names, started: float, progress
) -> tuple[Executor, BaseException | None]:
    """Write run.json, run the plan, and record how it went; the failure is returned to be re-raised
    once the run directory is complete."""
    rundir.write_json(path / rundir.RUN_JSON, run)
    executor = Executor(run_dir=path, trace_instance=names.trace_instance, progress=progress)
    failure: BaseException | None = None
    try:
        executor.execute(steps)
        run["status"] = "ok"
    except KeyboardInterrupt as exc:
        run["status"] = "interrupted"
        failure = exc
    except Exception as exc:  # written to run.json, then re-raised for the command line
        run["status"] = "error"
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
    return executor, failure


def run_capture(
    options: scenarios.CaptureOptions, run_root: Path, *, progress=None, caps: Capabilities | None = None
) -> RunResult:
    """``rstscope capture``: the same run directory, around the user's own programs on the host.

    Kernel records are not filtered by address (the host's traffic is the
    subject); the command's stdout is kept, and if it is ``rstscope pair client``
    output its attempts become clients.jsonl.
    """
    lab_like = LabOptions(capture_tool=options.capture_tool, trace=options.trace, loopback=True)
    caps = caps or probe_capabilities(lab_like, need_root=False)
    names = Names.make(os.getpid(), random.randrange(65536), loopback=True)
    steps = scenarios.capture_plan(options, names, caps)
    path = rundir.new_run_dir(run_root, options.name)
    started = time.time()
    run = _new_run("capture", options.name, options.to_json(), names, caps, steps, started, addresses={})
    executor, failure = _execute(path, run, steps, names, started, progress)
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
    return _finish_run(path, run, failure, progress)
