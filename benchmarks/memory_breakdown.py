"""What stays in memory per connection and per RST, stage by stage (tracemalloc), for benchmarks/PLAN.md.

Demonstrates where the memory of a reset storm goes: run on ``shapes.py resets`` (every connection
ends in a RST), it prints the traced memory after tracking, the size of one live ``Connection``
object and of its largest fields, and the bytes per RST added by evidence and verdicts, by the
reset rows and by the connection rows of the document.

    python benchmarks/shapes.py resets /tmp/resets.pcap --connections 50000
    python benchmarks/memory_breakdown.py /tmp/resets.pcap
"""

from __future__ import annotations

import argparse
import gc
import pickle
import sys
import tracemalloc

from rstscope import document, reset_table
from rstscope import evidence as evidence_mod
from rstscope.analysis import CHUNK_PACKETS, Analysis, ResetRecord
from rstscope.connections import Tracker
from rstscope.reader import open_capture
from rstscope.verdicts import classify


def traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def deep_size(obj, seen: set[int] | None = None) -> int:
    """sys.getsizeof over an object and everything it holds (slots, lists, tuples, dicts)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        size += sum(deep_size(k, seen) + deep_size(v, seen) for k, v in obj.items())
    elif isinstance(obj, (list, tuple, set)):
        size += sum(deep_size(x, seen) for x in obj)
    elif hasattr(obj, "__slots__"):
        size += sum(deep_size(getattr(obj, a), seen) for a in obj.__slots__ if hasattr(obj, a))
    return size


def slot_memory(tracker: Tracker) -> dict[str, int]:
    """Bytes of the tracker's per-slot storage and shared pools now (what PLAN.md §12 measures)."""
    cols = tracker._events.columns
    slots = tracker._arrays.capacity
    out = {
        f"sequence columns ({slots:,} slots)": tracker._arrays.table.nbytes,
        "event columns, history, block numbers": sum(a.nbytes for a in (cols.ev, cols.history, cols.blocks)),
        f"recent-segment pool ({len(cols.recent):,} blocks, {cols.recent.n_free:,} free)": cols.recent.data.nbytes,
        f"keepalive pool ({len(cols.probes):,} blocks)": cols.probes.data.nbytes,
        "ACK rings": tracker._ack_ring.frame.nbytes + tracker._ack_ring.ack.nbytes,
        "who each slot is": tracker._ident.nbytes,
        f"pending RST rows ({len(tracker._events.resets):,}; in memory: their place)": 16 * len(tracker._events.resets),
        f"dormant connections ({len(tracker._dormant):,}; rows in a file)": tracker._dormant._at.nbytes,
    }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("capture")
    args = parser.parse_args(argv)
    tracemalloc.start()
    base = traced()
    tracker = Tracker()
    with open_capture(args.capture, chunk_packets=CHUNK_PACKETS) as cap:
        for chunk in cap.chunks():
            tracker.feed(chunk)
    live = [c for c in tracker.connections if c is not None]
    print(f"after tracking: {(traced() - base) / 1e6:.1f} MB traced, {len(live):,} live connections")
    for part, size in slot_memory(tracker).items():
        print(f"  {part:<48} {size / 1e6:7.1f} MB")
    sample = live[:2000]
    blobs = [pickle.dumps(c) for c in sample]
    before = traced()
    copies = [pickle.loads(b) for b in blobs]
    per = (traced() - before) / len(copies)
    print(f"one live Connection: {per:,.0f} B in memory, {sum(map(len, blobs)) / len(blobs):,.0f} B pickled")
    c = copies[0]
    parts = {name: deep_size(getattr(c, name)) for name in c.__slots__ if hasattr(c, name)}
    for name, size in sorted(parts.items(), key=lambda kv: -kv[1])[:5]:
        print(f"  {name:<24} {size:6,d} B")
    del copies, blobs
    connections = tracker.finish()
    before = traced()
    found = evidence_mod.collect(connections.with_resets(), connections.host_ttl)
    mid = traced()
    resets = [ResetRecord(evidence=ev, decision=classify(ev)) for ev in found]
    after = traced()
    n = max(len(resets), 1)
    print(f"per RST: evidence {(mid - before) / n:,.0f} B, verdict {(after - mid) / n:,.0f} B ({len(resets):,} RSTs) "
          "if they were all held")  # fmt: skip
    before = traced()
    reset_rows = [document.reset_row(r) for r in resets]
    mid = traced()
    print(f"document rows: {(mid - before) / n:,.0f} B per reset row if they were all held")
    del found, resets, reset_rows
    before = traced()
    table = reset_table.build(connections.with_resets(), connections.host_ttl)
    after = traced()
    print(f"what analyze keeps instead (rstscope.reset_table): {(after - before) / n:,.0f} B per RST in memory "
          f"(rows {'in a temporary file' if table._spill.on_disk else 'in memory: a small capture'})")  # fmt: skip
    analysis = Analysis(capture=None, connections=connections, resets=table)
    before = traced()
    connection_rows = [document.connection_row(analysis, c) for c in connections.with_resets()]
    after = traced()  # held, so that their memory is counted
    print(f"{(after - before) / max(len(connection_rows), 1):,.0f} B per connection row (only LOST_LISTED are "
          "built for the terminal; --json streams them)")  # fmt: skip
    print(f"peak traced: {tracemalloc.get_traced_memory()[1] / 1e6:.1f} MB")
    tracemalloc.stop()  # freeing everything at exit while traced takes minutes
    return 0


if __name__ == "__main__":
    sys.exit(main())
