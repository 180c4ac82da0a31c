"""The differential harness: digests of ``rstscope analyze X --json`` (and ``conns X``) over every input
we have, frozen so that a change to the tracker can prove it changed no output.

Inputs: the scapy scenarios (tests/scenarios.py, tests/scenarios_wild.py), the sample captures
(captures/*/capture.pcap*), the reference corpus beside the repository (../shared/corpus: Zeek's and
tcpdump's test traces) and small generated captures of the benchmark shapes (long flows, short
connections, a reset storm).  A document is normalised before it is digested: the tool version and
the input path are blanked, and the JSON is re-encoded with sorted keys, so that only what the
analysis found counts (not how the JSON writer spaces it).

    python -m tests.differential --update     rewrite tests/baselines/differential.json (review the diff)
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus"
BASELINE = REPO / "tests" / "baselines" / "differential.json"
CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap", ".trace", ".dump", ".gz")


def run_cli(*argv: str) -> tuple[int, str, str]:
    """The CLI in-process: (exit status, stdout, stderr)."""
    from rstscope.cli import Environment, run

    out, err = io.StringIO(), io.StringIO()
    status = run(list(argv), Environment(stdout=out, stderr=err, stdout_isatty=False, stderr_isatty=False))
    return status, out.getvalue(), err.getvalue()


def normalised_json(text: str, path: str) -> str:
    """The document with the tool version and the input path blanked, keys sorted, compact."""
    doc = json.loads(text)
    doc["tool"] = "rstscope"
    for cap in doc.get("captures", []):
        cap["path"] = "INPUT"
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


DUMP: Path | None = None
"""Where ``--dump`` writes each normalised document (to diff two versions by hand), None: nowhere."""


def analyze_digest(path: Path, name: str = "") -> str:
    status, out, err = run_cli("analyze", str(path), "--json")
    body = normalised_json(out, str(path)) if status == 0 and out else out
    if DUMP is not None:
        target = DUMP / (name.replace("/", "__") + ".json")
        target.write_text(json.dumps(json.loads(body), indent=1, sort_keys=True) if status == 0 and out else body)
    return _digest(status, body, err.replace(str(path), "INPUT"))


def conns_digest(path: Path) -> str:
    status, out, err = run_cli("conns", str(path))
    return _digest(status, out.replace(str(path), "INPUT"), err.replace(str(path), "INPUT"))


def _digest(status: int, out: str, err: str) -> str:
    h = hashlib.sha256(f"{status}\n".encode())
    h.update(out.encode())
    h.update(b"\0")
    h.update(err.encode())
    return h.hexdigest()[:20]


# ---------------------------------------------------------------- the inputs
def scenario_cases(workdir: Path) -> Iterator[tuple[str, Path]]:
    from scapy.utils import wrpcap

    from tests import scenarios, scenarios_wild

    for make in scenarios.ALL + scenarios_wild.WILD:
        sc = make()
        path = workdir / f"{sc.name}.pcap"
        wrpcap(str(path), sc.packets)
        yield f"scenario/{sc.name}", path


def sample_cases() -> Iterator[tuple[str, Path]]:
    for path in sorted((REPO / "captures").glob("*/capture.pcap*")):
        yield f"sample/{path.parent.name}", path


def corpus_cases() -> Iterator[tuple[str, Path]]:
    for path in sorted(CORPUS.rglob("*")):
        if path.is_file() and path.name.endswith(CAPTURE_SUFFIXES):
            yield f"corpus/{path.relative_to(CORPUS).as_posix()}", path


def generated_cases(workdir: Path) -> Iterator[tuple[str, Path]]:
    sys.path.insert(0, str(REPO / "benchmarks"))
    from make_capture import generate as long_flows

    from tests import shortconns

    path = workdir / "long-flows.pcap"
    long_flows(str(path), 30_000, concurrency=40)
    yield "generated/long-flows", path
    path = workdir / "short-connections.pcap"
    shortconns.generate(str(path), 3_000)
    yield "generated/short-connections", path
    rng = shortconns.np.random.default_rng(5)
    for name, template in (("reset-ending", shortconns.RESET_ENDING), ("bare-rsts", shortconns.BARE_RST)):
        path = workdir / f"{name}.pcap"
        kinds = ["x"] * 2_000
        shortconns.write_pcap(str(path), shortconns.connections_table(kinds, {"x": template}, rng))
        yield f"generated/{name}", path


GROUPS: dict[str, Callable[[Path], Iterator[tuple[str, Path]]]] = {
    "scenario": scenario_cases,
    "sample": lambda _workdir: sample_cases(),
    "corpus": lambda _workdir: corpus_cases(),
    "generated": generated_cases,
}
"""Group name -> its inputs (name, capture path), made in a scratch directory where needed."""


def digests(group: str, workdir: Path) -> dict[str, str]:
    """name -> digest of ``analyze --json``, and of ``conns`` (name + ":conns") for Zeek's traces and the
    scenarios (the Zeek-timer path of the tracker)."""
    out = {}
    for name, path in GROUPS[group](workdir):
        out[name] = analyze_digest(path, name)
        if group == "scenario" or name.startswith("corpus/zeek/"):
            out[f"{name}:conns"] = conns_digest(path)
    return out


def load_baseline() -> dict[str, str]:
    return json.loads(BASELINE.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="freeze the analyzer's output digests")
    parser.add_argument("--update", action="store_true", help="rewrite " + str(BASELINE.relative_to(REPO)))
    parser.add_argument("--dump", type=Path, metavar="DIR", help="also write each normalised document into DIR")
    args = parser.parse_args(argv)
    if args.dump:
        global DUMP
        DUMP = args.dump
        DUMP.mkdir(parents=True, exist_ok=True)
    if not CORPUS.is_dir():
        print(f"corpus not found at {CORPUS}: cannot freeze it", file=sys.stderr)
        return 2
    return freeze_or_compare(GROUPS, digests, BASELINE, update=args.update)


def freeze_or_compare(groups: dict, digests_of: Callable[[str, Path], dict[str, str]], baseline: Path, *,
                      update: bool) -> int:  # fmt: skip
    """Digest every group; write them to ``baseline`` (``update``) or print the names whose digest
    changed against it.  Exit status: 1 when something changed."""
    current = {}
    with tempfile.TemporaryDirectory() as tmp:
        for group in groups:
            current.update(digests_of(group, Path(tmp)))
    if update:
        baseline.write_text(json.dumps(current, indent=0, sort_keys=True) + "\n")
        print(f"{len(current)} digests written to {baseline}")
        return 0
    old = json.loads(baseline.read_text())
    changed = sorted(k for k in current.keys() | old.keys() if current.get(k) != old.get(k))
    for name in changed:
        print(f"changed: {name}")
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
