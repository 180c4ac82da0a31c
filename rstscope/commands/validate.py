"""``rstscope validate``: do the capture-only verdicts agree with the kernel and the clients?"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rstscope.lab import rundir, validate
from rstscope.status import ExitStatus, InputError

HELP = "measure how far capture-only verdicts agree with the kernel's reasons and the clients"

DESCRIPTION = """\
For lab run directories (`rstscope lab`), compares each RST's verdict, made
from the capture alone, with what really happened: the reason the endpoint's
kernel gave when it sent it (tcp:tcp_send_reset), or the router's own record
(the forger's log, the nft reject counters) when no endpoint sent it, plus the
wire facts that tell the cases apart (data in flight, an answer to a SYN).
Each truth means ONE verdict (the strict mapping: `python -c "import
rstscope.lab.validate as v; help(v)"`).  Prints primary agreement (first RST of
each connection), echo agreement, origin agreement, the per-reason confusion
table, client agreement and every disagreement with its frame.  Exits 1 when
primary agreement is below --target.

With --presets, runs the lab first (root): every named preset --repeat times
into a fresh directory under --run-root, then validates those runs.  Runs
under a folder named `holdout` (--holdout N adds N such runs per preset) are
scored separately: write rules on the others, check them on these.

examples:
  sudo rstscope validate --presets all --repeat 3
  sudo rstscope validate --presets all --repeat 3 --holdout 1
  sudo rstscope validate --presets inject,ignored --repeat 2
  rstscope validate captures/runs/*
  rstscope validate captures/runs/20250101-120000-close-race --reanalyze --json > validation.json
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="*", type=Path, metavar="RUN_DIR")
    parser.add_argument(
        "--presets", metavar="LIST", help="run these lab presets first (comma-separated, or `all`; needs root)"
    )
    parser.add_argument("--repeat", type=int, default=3, metavar="N", help="runs per preset (default: 3)")
    parser.add_argument(
        "--holdout", type=int, default=0, metavar="N", help="N more runs per preset, held out (default: 0)"
    )
    parser.add_argument("--run-root", type=Path, metavar="DIR", help="where the preset runs go (captures/runs)")
    parser.add_argument(
        "--reanalyze", action="store_true", help="analyze the captures again instead of reading analysis.json"
    )
    parser.add_argument(
        "--target", type=float, default=0.99, metavar="RATIO", help="minimum kernel agreement (default: 0.99)"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def preset_names(text: str) -> list[str]:
    """``all`` or a comma-separated list of preset names; InputError for an unknown one."""
    from rstscope.lab import scenarios

    if text == "all":
        return list(scenarios.PRESETS)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in scenarios.PRESETS]
    if unknown or not names:
        known = ", ".join(scenarios.PRESETS)
        raise InputError(f"unknown preset(s) {', '.join(unknown) or repr(text)}: use `all` or {known}")
    return names


def run_presets(names: list[str], repeat: int, holdout: int, root: Path, env) -> list[Path]:
    """Run each preset ``repeat`` times into ``root`` and ``holdout`` times into ``root/holdout``."""
    from rstscope.lab import netns, runner, scenarios

    paths = []
    for name in names:
        options = scenarios.options_for(name, port=0)
        caps = netns.probe_capabilities(options)
        for number in range(repeat + holdout):
            where = root / validate.HOLDOUT_DIR if number >= repeat else root
            label = f"{name} {number + 1}/{repeat + holdout}" + (" (held out)" if number >= repeat else "")
            result = runner.run_lab(options, where, progress=lambda text, s=label: env.progress(f"{s}: {text}"),
                                    caps=caps)  # fmt: skip
            env.progress_done()
            paths.append(result.path)
    return paths


def run(args: argparse.Namespace, env) -> ExitStatus:
    if not args.runs and not args.presets:
        raise InputError("give run directories, or --presets LIST (e.g. --presets all --repeat 3)")
    if args.repeat < 1 or args.holdout < 0:
        raise InputError(f"--repeat must be 1 or more and --holdout 0 or more (got {args.repeat}, {args.holdout})")
    paths = list(args.runs)
    if args.presets:
        names = preset_names(args.presets)
        import time

        root = (args.run_root or env.run_root) / time.strftime("validate-%Y%m%d-%H%M%S")
        paths += run_presets(names, args.repeat, args.holdout, root, env)
        env.stderr.write(f"runs in {root}\n")
    runs = []
    for path in paths:
        if not rundir.is_run_dir(path):
            raise InputError(f"{path} is not a run directory (made by `rstscope lab` or `rstscope capture`)")
        runs.append(rundir.load_run(path))
    analyze = _reanalyze if args.reanalyze else _stored_or_fresh
    rules = validate.validate_runs([r for r in runs if not validate.is_held_out(r.path)], analyze=analyze)
    held = [r for r in runs if validate.is_held_out(r.path)]
    held_out = validate.validate_runs(held, analyze=analyze) if held else None
    if args.json:
        data = {**rules.to_json(), "held_out": held_out.to_json() if held_out else None}
        env.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    else:
        env.stdout.write(format_result(rules))
        if held_out is not None:
            env.stdout.write("\n=== held-out runs (not used to write rules) ===\n" + format_result(held_out))
    agreement = rules.primary_agreement
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


def _figure(name: str, agree: int, total: int) -> str:
    if not total:
        return f"{name:<18} no RST to score"
    return f"{name:<18} {agree}/{total} ({agree / total:.2%})"


def format_result(result: validate.Validation) -> str:
    out = [f"{len(result.runs)} run(s)"]
    out.append(_figure("primary agreement", result.primary_agree, result.primary_total)
               + f"; {result.unmatched} RSTs without a truth (not scored)")  # fmt: skip
    out.append(_figure("echo agreement", result.echo_agree, result.echo_total))
    out.append(_figure("origin agreement", result.origin_agree, result.origin_total)
               + f"; middlebox RSTs called backlog/close-race/refused: {result.middlebox_misnamed}")  # fmt: skip
    out.append(_figure("client agreement", result.client_agree, result.client_total))
    if result.primary_total:
        out.append("\nprimary RSTs: truth reason (rows) vs verdict (columns)")
        reasons = sorted({r for r, _ in result.matrix})
        verdicts = sorted({v for _, v in result.matrix})
        out += _matrix(reasons, verdicts, lambda r, v: result.matrix.get((r, v), 0))
    if result.echo_total:
        out.append("echo RSTs by verdict: " + ", ".join(f"{v} {n}" for v, n in result.echo_matrix.most_common()))
    if result.origin_total:
        out.append("\norigin: truth (rows) vs analyzer (columns)")
        truths = sorted({t for t, _ in result.origin_matrix})
        said = sorted({o for _, o in result.origin_matrix})
        out += _matrix(truths, said, lambda t, o: result.origin_matrix.get((t, o), 0))
    if result.client_total:
        out.append("\nconnection verdict (rows) vs client outcome (columns)")
        verdicts = sorted({v for v, _ in result.client_matrix})
        outcomes = sorted({o for _, o in result.client_matrix})
        out += _matrix(verdicts, outcomes, lambda v, o: result.client_matrix.get((v, o), 0))
    if result.disagreements:
        out.append(f"\n{len(result.disagreements)} disagreement(s):")
        for d in result.disagreements[:200]:
            where = f"frame {d.frame}" if d.frame is not None else f"connection {d.connection}"
            out.append(f"  {d.run} {where}: {d.kind}: truth {d.truth}, analyzer {d.verdict}: {d.evidence}")
        if len(result.disagreements) > 200:
            out.append(f"  ... {len(result.disagreements) - 200} more (use --json)")
    out += [f"note: {n}" for n in result.notes]
    return "\n".join(out) + "\n"
