"""tests/ mirrors rstscope/: every module has a test file named after it, or says here where it is tested."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TESTED_ELSEWHERE = {
    "__init__.py": "package docstrings and the version only",
    "__main__.py": "runs cli.main; the lab starts every server and client through it (tests/lab)",
    "analysis.py": "tests/test_analysis.py",
    "api.py": "tests/test_analysis.py (DataFrames, run directories)",
    "cli.py": "tests/test_cli.py",
    "document.py": "tests/test_cli.py (the JSON contract)",
    "status.py": "tests/test_cli.py (exit statuses)",
    "zeek.py": "tests/test_zeek.py",
    "pair.py": "tests/test_pair.py",
    "commands/analyze.py": "tests/test_cli.py",
    "commands/conns.py": "tests/test_conns.py",
    "commands/lab.py": "tests/lab/test_commands.py",
    "commands/pair.py": "tests/lab/test_commands.py, tests/test_pair.py",
    "commands/capture.py": "tests/lab/test_commands.py",
    "commands/validate.py": "tests/lab/test_commands.py",
    "commands/plot.py": "tests/report/test_commands.py",
    "commands/report.py": "tests/report/test_commands.py",
    "lab/sniff.py": "tests/lab/test_lab_root.py (the scapy capture fallback)",
    "report/text.py": "tests/test_cli.py (summary, table, CSV)",
    "report/records.py": "tests/report/test_sections.py (outcomes, stream indices, --connection lookup)",
    "reader/decode.py": "tests/reader/test_formats.py, tests/reader/test_tshark.py",
    "reader/interface.py": "tests/reader/test_reader_api.py",
    "reader/linktypes.py": "tests/reader/test_formats.py",
    "reader/pcap.py": "tests/reader/test_formats.py",
    "reader/pcapng.py": "tests/reader/test_formats.py",
    "reader/source.py": "tests/reader/test_formats.py (gzip, truncation)",
    "connections/keys.py": "tests/test_connections.py (instances, port reuse, Zeek timers), tests/test_differential.py",
    "connections/sequence.py": "tests/test_connections.py (chunking, wraparound), tests/test_differential.py",
    "connections/events.py": "tests/test_tracker_reference.py (the compiled loop against the Python event pass), "
    "tests/test_verdicts.py (RST observations), tests/test_differential.py",
    "connections/state.py": "tests/test_connections.py (the state table), tests/test_zeek.py (history, conn_state)",
    "connections/retire.py": "tests/test_connections.py (retiring idle connections, the spill file)",
    "connections/tracker.py": "tests/test_connections.py, tests/test_differential.py",
    "connections/records.py": "tests/test_connections.py (the public surface), tests/test_evidence.py",
    "connections/_kernel_build.py": "tests/test_tracker_reference.py (the compiled loop it builds)",
    "reader/_compiled_build.py": "tests/reader/test_formats.py (the compiled loops it builds: record walk, rows)",
    "fleet/frames.py": "tests/fleet/test_stitch.py (file and file_frame of resets and connections)",
    "fleet/options.py": "tests/fleet/test_pieces.py, tests/fleet/test_shards.py (through the CLI)",
    "fleet/run.py": "tests/fleet/test_stitch.py, tests/fleet/test_shards.py, tests/fleet/test_cluster.py",
    "commands/watch.py": "tests/watch/test_watch_cli.py",
    "watch/session.py": "tests/watch/test_watch_cli.py, tests/watch/test_watch_root.py",
    "watch/printer.py": "tests/watch/test_watch_cli.py (text), tests/watch/test_watch_root.py (NDJSON)",
    "watch/ring.py": "tests/watch/test_watch_cli.py (ring files, snapshots)",
    "watch/metrics.py": "tests/watch/test_watch_root.py (scraped over HTTP), tests/watch/test_watch_cli.py (addresses)",
}


def test_every_module_has_its_tests():
    missing = []
    for module in sorted((ROOT / "rstscope").rglob("*.py")):
        rel = module.relative_to(ROOT / "rstscope").as_posix()
        if rel.endswith("/__init__.py") or rel in TESTED_ELSEWHERE:
            continue
        package, _, name = rel.rpartition("/")
        candidates = [ROOT / "tests" / package / f"test_{name}", ROOT / "tests" / f"test_{name}"]
        if not any(c.is_file() for c in candidates):
            missing.append(rel)
    assert not missing, f"modules without a test file (add one, or say where they are tested): {missing}"


def test_exemptions_point_at_real_test_files():
    for where in TESTED_ELSEWHERE.values():
        for token in where.replace(",", " ").split():
            if token.startswith("tests/"):
                assert (ROOT / token).is_file(), token


KNOWN_CIRCLES = {
    ("rstscope.lab.groundtruth", "rstscope.lab.validate"),  # issue 9 item 4: broken in another change
}


def _imports(module: Path, name: str, modules: set[str]) -> set[str]:
    """The rstscope modules ``module`` imports, at the top or inside functions."""
    package = name if module.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            base = ".".join([*parts, node.module] if node.module else parts) if node.level else node.module
            submodules = {f"{base}.{a.name}" for a in node.names} & modules
            out |= submodules
            if len(submodules) < len(node.names):  # names from the module itself, not only its submodules
                out.add(base)
    return {m for m in out if m in modules and m != name}


def test_no_two_modules_import_each_other():
    """issue 9: a pair of modules importing each other (even inside a function) is one stage split in two."""
    files = {}
    for module in (ROOT / "rstscope").rglob("*.py"):
        name = ".".join(module.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        files[name] = module
    deps = {name: _imports(module, name, set(files)) for name, module in files.items()}
    circles = {tuple(sorted((a, b))) for a in deps for b in deps[a] if a in deps[b]}
    assert circles <= KNOWN_CIRCLES, sorted(circles - KNOWN_CIRCLES)
