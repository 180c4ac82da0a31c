"""Digests of everything the tracker hands on, connection by connection, frozen from the per-row Python
event pass (before the compiled loop replaced it), so that the loop can prove it computes the same records.

The JSON document (tests/differential.py) shows only part of a :class:`Connection`; this digest covers
every public field of every connection and of its RST observations, findings and segments after a reset
(``repr`` of the dataclasses), plus ``host_ttl``, for the differential inputs, with the analyzer's
chunking and with Zeek's timers.

    python -m tests.tracker_reference --update     rewrite tests/baselines/tracker.json (review why)
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import sys
from pathlib import Path

from tests import differential

BASELINE = differential.REPO / "tests" / "baselines" / "tracker.json"


def connection_text(c) -> str:
    """Every public field of a connection, in a stable text form."""
    return repr([(f.name, getattr(c, f.name)) for f in dataclasses.fields(c) if not f.name.startswith("_")])


def tracker_digest(path: Path, *, zeek_timers: bool = False, chunk_packets: int | None = None) -> str:
    from rstscope import analysis
    from rstscope.connections import Tracker
    from rstscope.reader import open_capture
    from rstscope.status import RstscopeError

    h = hashlib.sha256()
    tracker = Tracker(zeek_timers=zeek_timers)
    try:
        with open_capture(path, chunk_packets=chunk_packets or analysis.CHUNK_PACKETS) as cap:
            for chunk in cap.chunks():
                tracker.feed(chunk)
    except RstscopeError as e:
        return "error:" + type(e).__name__
    store = tracker.finish()
    h.update(repr(len(store)).encode())
    for c in store:
        h.update(connection_text(c).encode())
    h.update(repr([c.id for c in store.with_resets()]).encode())
    h.update(repr(sorted(store.host_ttl.items())).encode())
    return h.hexdigest()[:20]


SHAPE_CONNECTIONS = {"short": 25_000, "flood": 50_000, "resets": 30_000}
"""Benchmark shapes (benchmarks/shapes.py) large enough to pass STALE_AFTER_FRAMES: they retire and spill."""


def shape_cases(workdir: Path):
    sys.path.insert(0, str(differential.REPO / "benchmarks"))
    import shapes

    for name, connections in SHAPE_CONNECTIONS.items():
        path = workdir / f"{name}.pcap"
        shapes.generate(path, shapes.SHAPES[name], connections)
        yield f"shape/{name}", path


GROUPS = {**differential.GROUPS, "shape": shape_cases}


def digests(group: str, workdir: Path) -> dict[str, str]:
    out = {}
    for name, path in GROUPS[group](workdir):
        out[name] = tracker_digest(path)
        if group == "scenario" or name.startswith("corpus/zeek/"):
            out[f"{name}:zeek"] = tracker_digest(path, zeek_timers=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="freeze the tracker's per-connection digests")
    parser.add_argument("--update", action="store_true")
    args = parser.parse_args(argv)
    return differential.freeze_or_compare(GROUPS, digests, BASELINE, update=args.update)


if __name__ == "__main__":
    sys.exit(main())
