"""``rstscope capture``: a run directory around your own servers and clients on this host."""

from __future__ import annotations

import argparse
from pathlib import Path

from rstscope.lab import rundir, scenarios
from rstscope.status import ExitStatus, InputError

HELP = "capture (plus kernel resets and counters) around your own programs, into a run directory"

DESCRIPTION = """\
Records the same kind of run directory as `rstscope lab`, but around programs
you run yourself on this host: a capture on one interface, the kernel's reset
tracepoints (host-wide, when tracefs is available and you are root) and the
host's TCP counters before and after.  Either give a duration, or a command
after `--`: the capture stops a moment after the command exits.  If the
command is `rstscope pair client`, its attempts become clients.jsonl.
Nothing on the host is changed.

Exit status: the command's own exit status when it failed (the summary
prints it too); else 0, 3 when the run is degraded, 1 when a step failed.

examples:
  sudo rstscope capture --duration 30
  sudo rstscope capture --iface eth0 --filter 'tcp port 443' --duration 60
  sudo rstscope capture -- rstscope pair client 127.0.0.1 --loops 8 --count 5
  sudo rstscope capture --name nginx-413 -- ./load-test.sh
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--iface", default="lo", help="interface to capture on (default: lo)")
    parser.add_argument("--filter", default="tcp", metavar="BPF", help="capture filter (default: tcp)")
    parser.add_argument("--snaplen", type=int, default=0, metavar="BYTES", help="bytes kept per packet (0: all)")
    parser.add_argument("--duration", type=float, metavar="S", help="capture for S seconds")
    parser.add_argument("--name", default="capture", help="name in the run directory (default: capture)")
    parser.add_argument("--capture-tool", choices=("auto", "dumpcap", "tcpdump", "scapy"), default="auto")
    parser.add_argument("--no-trace", dest="trace", action="store_false", help="skip the kernel trace")
    parser.add_argument("--settle", type=float, default=1.0, metavar="S", help="keep capturing S after the command")
    parser.add_argument("--run-root", type=Path, metavar="DIR", help="where run directories go (captures/runs)")
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND", help="program to run")


def run(args: argparse.Namespace, env) -> ExitStatus:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if bool(command) == (args.duration is not None):
        raise InputError("give either --duration S or a command after `--` (not both)")
    options = scenarios.CaptureOptions(
        iface=args.iface,
        bpf=args.filter,
        snaplen=args.snaplen,
        duration=args.duration,
        command=tuple(command),
        capture_tool=args.capture_tool,
        trace=args.trace,
        settle=args.settle,
        name=args.name,
    )
    from rstscope.lab import checks, runner

    checks.check_capture_options(options)
    run_root = checks.check_run_root(args.run_root or env.run_root)
    result = runner.run_capture(options, run_root, progress=env.progress)
    env.progress_done()
    for line in result.run.get("stale_removed", []):
        env.warn(f"cleaned up before the run: {line}")
    for warning in result.run.get("warnings", []):
        env.warn(warning)
    if options.trace and not result.run.get("trace", {}).get("available"):
        env.warn(f"no kernel trace: {result.run.get('trace', {}).get('message')}; capture and counters only")
    if not result.run.get("analysis", {}).get("ok"):
        env.warn(f"analysis not written: {result.run.get('analysis', {}).get('error')}")
    from rstscope.commands.lab import format_summary, run_exit_status, summarize

    summary = summarize(rundir.load_run(result.path))
    env.stdout.write(format_summary(summary))
    command_rc = result.run.get("command_rc")
    if command and command_rc:
        # the command's own failure is the exit status (a signal's death as the shell shows it: 128+N)
        return command_rc if command_rc > 0 else 128 - command_rc
    return run_exit_status([summary])
