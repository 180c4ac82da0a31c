"""``rstscope validate``: do the capture-only verdicts agree with the kernel and the clients?"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rstscope.lab import rundir, validate
from rstscope.status import ExitStatus, InputError

HELP = "measure how far capture-only verdicts agree with the kernel's reasons and the clients"

_MAPPING = "\n".join(
    f"  {reason:<26} {', '.join(sorted(verdicts))}" for reason, verdicts in validate.KERNEL_AGREEMENT.items()
)

DESCRIPTION = f"""\
For lab run directories (`rstscope lab`), compares each RST's verdict, made
from the capture alone, with the reason the kernel gave when it sent it
(tcp:tcp_send_reset), and each connection's verdict with what the client saw
(ECONNRESET, EPIPE, short read, timeout).  Prints both confusion matrices and
every disagreement with its evidence.  Exits 1 when agreement with the kernel
is below --target.

mapping (kernel reason -> verdicts that agree; /LISTEN = a listener's reset):
{_MAPPING}
  any other reason           {", ".join(sorted(validate.OTHER_REASONS))}

examples:
  rstscope validate captures/runs/*
  rstscope validate captures/runs/20250101-120000-close-race --reanalyze
  rstscope validate captures/runs/* --json > validation.json
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    parser.add_argument(
        "--reanalyze", action="store_true", help="analyze the captures again instead of reading analysis.json"
    )
    parser.add_argument(
        "--target", type=float, default=0.99, metavar="RATIO", help="minimum kernel agreement (default: 0.99)"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace, env) -> ExitStatus:
    runs = []
    for path in args.runs:
        if not rundir.is_run_dir(path):
            raise InputError(f"{path} is not a run directory (made by `rstscope lab` or `rstscope capture`)")
        runs.append(rundir.load_run(path))
    analyze = _reanalyze if args.reanalyze else _stored_or_fresh
    result = validate.validate_runs(runs, analyze=analyze)
    if args.json:
        env.stdout.write(json.dumps(result.to_json(), indent=2, default=str) + "\n")
    else:
        env.stdout.write(format_result(result))
    agreement = result.kernel_agreement
    if agreement is not None and agreement < args.target:
        return ExitStatus.ERROR
    return ExitStatus.OK


def _reanalyze(run: rundir.RunDir) -> dict | None:
    from rstscope import api

    return api.document(api.analyze(run.path))


def _stored_or_fresh(run: rundir.RunDir) -> dict | None:
    if run.analysis is not None:
        return run.analysis
    try:
        return _reanalyze(run)
    except ImportError:
        return None


def _matrix(rows: list[str], cols: list[str], cell) -> list[str]:
    width = max([len(r) for r in rows] + [6])
    col_width = [max(len(c), 5) for c in cols]
    lines = [" " * width + "  " + "  ".join(f"{c:>{w}}" for c, w in zip(cols, col_width, strict=True))]
    for row in rows:
        cells = "  ".join(f"{cell(row, c) or '.':>{w}}" for c, w in zip(cols, col_width, strict=True))
        lines.append(f"{row:<{width}}  {cells}")
    return lines


def format_result(result: validate.Validation) -> str:
    out = [f"{len(result.runs)} run(s)"]
    if result.kernel_total:
        out.append(
            f"\nverdict vs kernel reason: {result.kernel_agree}/{result.kernel_total} RSTs agree "
            f"({result.kernel_agreement:.2%}); {result.unmatched} RSTs without a kernel record"
        )
        reasons = sorted({r for r, _ in result.matrix})
        verdicts = sorted({v for _, v in result.matrix})
        out += _matrix(reasons, verdicts, lambda r, v: result.matrix.get((r, v), 0))
    else:
        out.append(f"\nno RST with a kernel record ({result.unmatched} RSTs without one)")
    if result.client_total:
        out.append(
            f"\nconnection verdict vs client outcome: {result.client_agree}/{result.client_total} agree "
            f"({result.client_agreement:.2%})"
        )
        verdicts = sorted({v for v, _ in result.client_matrix})
        outcomes = sorted({o for _, o in result.client_matrix})
        out += _matrix(verdicts, outcomes, lambda v, o: result.client_matrix.get((v, o), 0))
    if result.disagreements:
        out.append(f"\n{len(result.disagreements)} disagreement(s):")
        for d in result.disagreements[:200]:
            where = f"frame {d.frame}" if d.frame is not None else f"connection {d.connection}"
            out.append(f"  {d.run} {where}: {d.kind} {d.truth} vs verdict {d.verdict}: {d.evidence}")
        if len(result.disagreements) > 200:
            out.append(f"  ... {len(result.disagreements) - 200} more (use --json)")
    out += [f"note: {n}" for n in result.notes]
    return "\n".join(out) + "\n"
