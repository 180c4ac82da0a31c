"""``rstscope lab``: reproduce resets between two namespaces and keep a run directory."""

from __future__ import annotations

import argparse
import json
import shlex
from collections import Counter
from pathlib import Path

from rstscope.lab import netns, rundir, scenarios
from rstscope.status import ExitStatus, InputError

HELP = "reproduce a reset scenario in network namespaces, capture it, and explain it"


def _presets_text() -> str:
    width = max(len(name) for name in scenarios.PRESETS)
    return "\n".join(f"  {name:<{width}}  {preset.summary}" for name, preset in scenarios.PRESETS.items())


DESCRIPTION = f"""\
Builds two network namespaces joined by a veth pair (names unique per run),
shapes both directions with tbf, sets the server namespace's sysctls, starts
the article's server and client loops (`rstscope pair`), captures on the
client side, records the kernel's reset tracepoints and counters, and writes
captures/runs/<time>-<scenario>/ (run.json, capture.pcapng, clients.jsonl,
kernel.jsonl, nstat.json, analysis.json).  Everything is torn down on exit,
on error and on Ctrl-C; the host's interfaces and sysctls are never changed.
Needs root.

scenarios (--scenario):
{_presets_text()}

examples:
  sudo rstscope lab --scenario close-race
  sudo rstscope lab --compare close-race lingering
  sudo rstscope lab --scenario backlog --loops 30
  sudo rstscope lab --scenario close-race --rate 5mbit --queue 100ms --loss 1
  sudo rstscope lab --scenario clean --loopback          # no namespaces, on 127.0.0.1
  sudo rstscope lab --scenario firewall-reject           # client -- router (nftables) -- server
  sudo rstscope lab --scenario close-race --via-router   # any preset through the router
  rstscope lab --scenario backlog --dry-run               # print the plan, run nothing
  rstscope analyze captures/runs/20250101-120000-close-race
  sudo rstscope lab --cleanup                             # remove what killed runs left

exit status: 0 ok; 3 degraded (the capture holds clearly fewer RSTs than the
kernel sent: verdicts miss resets); 1 a step failed (run.json: failed);
2 bad option or input; 4 a prerequisite is missing (root, a tool);
130 interrupted (run.json: interrupted).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    what = parser.add_argument_group("what to run")
    choice = what.add_mutually_exclusive_group()
    choice.add_argument(
        "--scenario", choices=[*scenarios.PRESETS, "custom"], default=None, help="preset (default: close-race)"
    )
    choice.add_argument("--compare", nargs=2, metavar=("A", "B"), help="run two scenarios, show them side by side")
    choice.add_argument("--list", action="store_true", help="list the scenarios and what they should show")
    choice.add_argument(
        "--cleanup",
        action="store_true",
        help="remove what killed runs left (processes, namespaces with their veth and nftables, trace instances, "
        "tracefs mounts) and list it",
    )
    what.add_argument("--dry-run", action="store_true", help="print the plan and exit (no root needed)")

    link = parser.add_argument_group("link")
    link.add_argument("--rate", help="tbf rate each way (default: 20mbit)")
    link.add_argument("--queue", help="tbf queue as latency (default: 200ms)")
    link.add_argument("--client-rate", metavar="RATE", help="rate of the client->server direction (default: --rate)")
    link.add_argument("--delay", help="netem one-way delay, e.g. 20ms (needs netem in the kernel)")
    link.add_argument("--loss", type=float, metavar="PERCENT", help="random loss each way (netem, else nftables)")
    link.add_argument("--loopback", action="store_true", default=None, help="no namespaces: run on 127.0.0.1")
    link.add_argument(
        "--via-router",
        action="store_true",
        default=None,
        help="a third namespace between client and server: a router with nftables (the middlebox presets)",
    )

    server = parser.add_argument_group("server (see 'rstscope pair server --help')")
    server.add_argument("--port", type=int, help="server port (default: 8080; a free port with --loopback)")
    server.add_argument("--close", metavar="{close,lingering,linger0,linger=N}")
    server.add_argument("--backlog", type=int)
    server.add_argument("--accept-delay", type=float, metavar="S")
    server.add_argument("--read-bytes", type=int, metavar="N")
    server.add_argument("--response-bytes", type=int, metavar="N")

    clients = parser.add_argument_group("clients (see 'rstscope pair client --help')")
    clients.add_argument("--loops", type=int, metavar="N", help="concurrent client loops (default: 20)")
    until = clients.add_mutually_exclusive_group()
    until.add_argument("--count", type=int, metavar="N", help="attempts per loop (default: 1)")
    until.add_argument("--duration", type=float, metavar="S", help="loop for S seconds instead")
    clients.add_argument("--request-bytes", type=int, metavar="N")
    clients.add_argument("--trailing-bytes", type=int, metavar="N")
    clients.add_argument("--late-bytes", type=int, metavar="N")
    clients.add_argument("--late-delay", type=float, metavar="S")
    clients.add_argument("--timeout", type=float, metavar="S", help="client connect/read timeout")

    sysctl = parser.add_argument_group("server namespace sysctls")
    sysctl.add_argument("--somaxconn", type=int, metavar="N")
    sysctl.add_argument("--abort-on-overflow", type=int, choices=(0, 1))
    sysctl.add_argument("--syncookies", type=int, choices=(0, 1, 2))
    sysctl.add_argument("--synack-retries", type=int, metavar="N")

    capture = parser.add_argument_group("capture and ground truth")
    capture.add_argument("--snaplen", type=int, metavar="BYTES", help="bytes kept per packet (default: all)")
    capture.add_argument("--capture-tool", choices=("auto", "dumpcap", "tcpdump", "scapy"))
    capture.add_argument("--no-trace", dest="trace", action="store_false", default=None, help="skip tracefs")
    capture.add_argument("--settle", type=float, metavar="S", help="capture S more seconds after the clients")

    output = parser.add_argument_group("output")
    output.add_argument("--run-root", type=Path, metavar="DIR", help="where run directories go (captures/runs)")
    output.add_argument("--json", action="store_true", help="print the run summary as JSON")


OPTION_ARGS = (
    "rate", "queue", "client_rate", "delay", "loss", "loopback", "port", "close", "backlog", "accept_delay",
    "read_bytes", "response_bytes", "loops", "count", "duration", "request_bytes", "trailing_bytes", "late_bytes",
    "late_delay", "timeout", "somaxconn", "abort_on_overflow", "syncookies", "synack_retries", "snaplen",
    "capture_tool", "trace", "settle", "via_router",
)  # fmt: skip
"""Command-line options that map one to one onto LabOptions fields."""


def _options(args: argparse.Namespace, scenario: str) -> tuple[scenarios.LabOptions, set[str]]:
    from rstscope.lab import checks

    if scenario not in scenarios.PRESETS and scenario != "custom":
        raise InputError(f"unknown scenario {scenario!r}: choose among {', '.join(scenarios.PRESETS)}")
    overrides = {name: getattr(args, name) for name in OPTION_ARGS if getattr(args, name) is not None}
    if "port" not in overrides:
        overrides["port"] = 0  # resolved per mode by the runner
    options = scenarios.options_for(scenario, **overrides)
    checks.check_lab_options(options)
    return options, set(overrides)


def run(args: argparse.Namespace, env) -> ExitStatus:
    if args.list:
        for name, preset in scenarios.PRESETS.items():
            env.stdout.write(f"{name}\n  {preset.summary}\n  expect: {preset.expect}\n")
        return ExitStatus.OK
    if args.cleanup:
        return _cleanup(env)
    from rstscope.lab import checks, runner

    names = args.compare or [args.scenario or "close-race"]
    run_root = args.run_root or env.run_root
    plans = []
    for scenario in names:
        options, explicit = _options(args, scenario)
        runner.check_options(options, explicit)
        plans.append(options)
    if not args.dry_run:
        checks.check_run_root(run_root)
    if args.dry_run:
        for options in plans:
            caps = scenarios.Capabilities(
                python="python3",
                project_root=scenarios.default_project_root(),
                capture_tool="dumpcap" if options.capture_tool == "auto" else options.capture_tool,
                netem=netns.kernel_has_qdisc("netem"),
                tracefs=options.trace,
            )
            options, names_, caps = runner.prepare(options, caps)
            env.stdout.write(f"# scenario {options.scenario}\n")
            env.stdout.write(scenarios.describe(scenarios.plan(options, names_, caps)) + "\n")
        return ExitStatus.OK
    results = []
    for options in plans:
        caps = netns.probe_capabilities(options)
        if options.trace and not caps.tracefs:
            env.warn("no kernel trace: " + _trace_reason() + "; the run goes on with the capture and counters")
        env.progress(f"{options.scenario}: starting")
        result = runner.run_lab(
            options, run_root, progress=lambda text, s=options.scenario: env.progress(f"{s}: {text}"), caps=caps
        )
        env.progress_done()
        for line in result.run.get("stale_removed", []):
            env.warn(f"cleaned up before the run: {line}")
        for warning in result.run.get("warnings", []):
            env.warn(warning)
        if result.run.get("trace", {}).get("available") is False and options.trace:
            env.warn(f"kernel trace: {result.run['trace'].get('message')}")
        if result.run.get("analysis", {}).get("ok") is False:
            env.warn(f"analysis not written: {result.run['analysis']['error']} (run `rstscope analyze {result.path}`)")
        results.append(summarize(rundir.load_run(result.path)))
    if args.json:
        env.stdout.write(json.dumps(results if args.compare else results[0], indent=2) + "\n")
    elif args.compare:
        env.stdout.write(format_compare(results))
    else:
        env.stdout.write(format_summary(results[0]))
    return run_exit_status(results)


def run_exit_status(results: list[dict]) -> ExitStatus:
    """OK, or DEGRADED when a run's capture missed resets the kernel sent (its warning says so)."""
    if any(r["status"] == "degraded" for r in results):
        return ExitStatus.DEGRADED
    return ExitStatus.OK


def _trace_reason() -> str:
    from rstscope.lab import trace

    return trace.tracefs_available()[1]


def summarize(run: rundir.RunDir) -> dict:
    """The numbers a run is judged by: client outcomes, RSTs by verdict, kernel reasons, bytes lost."""
    outcomes = Counter(a.get("outcome") for a in run.clients)
    lost = sum(
        max(0, (a.get("bytes_expected") or 0) - a.get("bytes_read", 0)) for a in run.clients if a.get("connect") == "ok"
    )
    reasons = Counter(
        (r.get("reason") + ("/LISTEN" if r.get("state") == "TCP_LISTEN" else ""))
        for r in run.kernel
        if r.get("event") == "tcp_send_reset"
    )
    analysis = run.analysis or {}
    verdicts = Counter(r.get("verdict") for r in analysis.get("resets", []))
    counters = {side: data.get("counters", {}) for side, data in run.nstat.items()}
    command = run.run.get("options", {}).get("command")
    return {
        "run": str(run.path),
        "scenario": run.scenario,
        "status": run.run.get("status"),
        "duration": run.run.get("duration"),
        "attempts": len(run.clients),
        "client_outcomes": dict(outcomes.most_common()),
        "econnreset": sum(n for o, n in outcomes.items() if o and o.startswith("ECONNRESET")),
        "bytes_lost": lost,
        "rsts": len(analysis.get("resets", [])) if run.analysis else None,
        "rsts_by_verdict": dict(verdicts.most_common()),
        "kernel_reasons": dict(reasons.most_common()),
        "kernel_available": run.kernel_available,
        "listen_overflow_drops": sum(1 for r in run.kernel if r.get("event") == "kfree_skb"),
        "synack_retransmits": sum(1 for r in run.kernel if r.get("event") == "tcp_retransmit_synack"),
        "counters": {side: {k: v for k, v in c.items() if v} for side, c in counters.items()},
        "capture": run.run.get("capture", {}),
        "capture_check": run.run.get("capture_check"),
        "ground_truth": analysis.get("ground_truth"),
        "command": shlex.join(map(str, command)) if isinstance(command, list) and command else None,
        "command_rc": run.run.get("command_rc"),
    }


def _fmt_counter(counter: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in counter.items()) or "none"


def format_summary(s: dict) -> str:
    capture = s["capture"]
    stats = capture.get("stats", {})
    lines = [
        f"run        {s['run']}",
        f"scenario   {s['scenario']} ({s['status']}, {s['duration']} s)",
        *([f"command    `{s['command']}` exited with {s['command_rc']}"] if s.get("command") else []),
        f"clients    {s['attempts']} attempts: {_fmt_counter(s['client_outcomes'])}; "
        f"{s['bytes_lost']:,} bytes not read",
        f"capture    {capture.get('file')} by {capture.get('tool')}: "
        f"{stats.get('captured', '?')} packets, {stats.get('dropped', '?')} dropped",
    ]
    check = s.get("capture_check") or {}
    if "kernel_rsts" in check:
        lines.append(
            f"check      the capture holds {check['capture_rsts']} RSTs; the kernel sent {check['kernel_rsts']} "
            f"({check['kernel_source']}), the link's qdiscs dropped {check['qdisc_drops']} packets"
        )
    if s["rsts"] is not None:
        lines.append(f"RSTs       {s['rsts']}: {_fmt_counter(s['rsts_by_verdict'])}")
    else:
        lines.append("RSTs       (no analysis.json: run `rstscope analyze` on the run directory)")
    if s["kernel_available"]:
        lines.append(f"kernel     {_fmt_counter(s['kernel_reasons'])}")
        if s["listen_overflow_drops"] or s["synack_retransmits"]:
            lines.append(
                f"           {s['listen_overflow_drops']} ACKs dropped at a full accept queue, "
                f"{s['synack_retransmits']} SYN-ACK retransmissions"
            )
    else:
        lines.append("kernel     (no trace)")
    for side, counters in s["counters"].items():
        lines.append(f"{side:<10} {_fmt_counter(counters)}")
    gt = s.get("ground_truth") or {}
    if gt.get("kernel_agreement") is not None:
        # kernel_agreement: primary RSTs under the strict mapping (rstscope/lab/validate.py)
        figures = [f"primary RSTs {gt['kernel_agreement']:.1%}"]
        figures += [f"{name} {gt[key]:.1%}" for name, key in (("echoes", "echo_agreement"),
                    ("origin", "origin_agreement")) if gt.get(key) is not None]  # fmt: skip
        lines.append(
            f"agreement  {', '.join(figures)} ({gt['resets_matched']} of {gt['resets']} RSTs matched "
            f"to a kernel record, {gt.get('middlebox_resets', 0)} sent by the router)"
        )
    return "\n".join(lines) + "\n"


def format_compare(results: list[dict]) -> str:
    a, b = results
    rows = [
        ("scenario", a["scenario"], b["scenario"]),
        ("duration (s)", a["duration"], b["duration"]),
        ("attempts", a["attempts"], b["attempts"]),
        ("ECONNRESET", a["econnreset"], b["econnreset"]),
        ("client outcomes", _fmt_counter(a["client_outcomes"]), _fmt_counter(b["client_outcomes"])),
        ("bytes not read", f"{a['bytes_lost']:,}", f"{b['bytes_lost']:,}"),
        ("RSTs", a["rsts"], b["rsts"]),
    ]
    for verdict in sorted(set(a["rsts_by_verdict"]) | set(b["rsts_by_verdict"])):
        rows.append((f"  {verdict}", a["rsts_by_verdict"].get(verdict, 0), b["rsts_by_verdict"].get(verdict, 0)))
    rows.append(("kernel reasons", _fmt_counter(a["kernel_reasons"]), _fmt_counter(b["kernel_reasons"])))
    rows.append(("run", a["run"], b["run"]))
    width = max(len(str(r[1])) for r in rows if r[0] != "run")
    out = [f"{label:<16} {left!s:<{width}}  {right}" for label, left, right in rows]
    return "\n".join(out) + "\n"


def _cleanup(env) -> ExitStatus:
    """Remove what runs of dead rstscope processes left (see ``rstscope.lab.cleanup``), listing each."""
    import os

    from rstscope.lab import cleanup
    from rstscope.status import PrerequisiteError

    if os.geteuid() != 0:
        raise PrerequisiteError("--cleanup needs root (it deletes namespaces and trace instances); run it with sudo")
    done = cleanup.remove(cleanup.find_stale())
    for line in done:
        env.stdout.write(line + "\n")
    failed = sum(1 for line in done if line.startswith("could not"))
    tail = f", {failed} could not be" if failed else ""
    env.stdout.write(f"{len(done) - failed} leftovers of dead runs removed{tail}\n")
    return ExitStatus.ERROR if failed else ExitStatus.OK
