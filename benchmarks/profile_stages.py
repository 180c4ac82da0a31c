"""Where ``rstscope analyze --json`` spends its time, stage by stage, and the cost of each hot call.

Demonstrates the measurements behind benchmarks/PLAN.md: one in-process run of the pipeline with
timers around each stage (read, the tracker's vectorised pass, its event pass, finish, evidence and
verdicts, the JSON document), and counters around the per-event Python calls (names of the tracker
package, rstscope/connections/; calls that take a batch are counted per batch).  The timers wrap the
functions from outside (this script only), so the code measured is the code that ships; a timer
costs about 0.3 us a call, which is small against the calls measured here.

    python benchmarks/profile_stages.py benchmarks/data/short-1000000pkts-seed9.pcap
    python benchmarks/profile_stages.py FILE --cprofile OUT.prof    # the same run under cProfile
    python benchmarks/profile_stages.py FILE --cpu    # CPU seconds: steadier when others use the machine

Reading runs in this process (no prefetch child), so the read figure is the reader's own cost.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from collections import defaultdict

from rstscope import analysis, columns, document, evidence, reset_table
from rstscope.connections import events, retire, tracker
from rstscope.reader import open_capture
from rstscope.report import text

CLOCK = time.perf_counter
"""Wall time, or with ``--cpu`` this process's CPU time (steadier on a machine others are using)."""
TIMES: dict[str, float] = defaultdict(float)
CPU: dict[str, float] = defaultdict(float)
"""Process CPU seconds (time.process_time) of the same calls: the figure to trust on a loaded machine."""
CALLS: dict[str, int] = defaultdict(int)


def _timed(owner, name: str, label: str) -> None:
    """Replace ``owner.name`` by a wrapper that adds its wall time to ``TIMES[label]``."""
    inner = getattr(owner, name)

    def wrapper(*args, **kwargs):
        start, cpu = time.perf_counter(), time.process_time()
        try:
            return inner(*args, **kwargs)
        finally:
            TIMES[label] += time.perf_counter() - start
            CPU[label] += time.process_time() - cpu
            CALLS[label] += 1

    setattr(owner, name, wrapper)


def instrument() -> None:
    """Timers around the stages and the hot calls of the tracker package (rstscope/connections/)."""
    T, E = tracker.Tracker, events.EventPass
    _timed(T, "_feed", "tracker: _feed (vectorised pass + all below)")
    _timed(E, "run", "tracker: EventPass.run (compiled loop + rows)")
    _timed(E, "_resets", "  EventPass._resets (RST rows, per chunk)")
    _timed(T, "_new_connections", "tracker: _new_connections (per chunk)")
    _timed(T, "_retire_idle", "tracker: _retire_idle (rows + spill)")
    _timed(T, "_rows", "  Tracker._rows (per batch)")
    _timed(retire.Spill, "put", "  Spill.put (per batch)")
    _timed(T, "finish", "tracker: finish")
    _timed(retire.Spill, "get", "Spill.get (connections from rows, per batch)")
    _timed(retire.Spill, "subjects", "Spill.subjects (what evidence reads, per batch)")
    _timed(reset_table, "build", "reset_table.build (evidence + verdicts + rows)")
    _timed(evidence, "of_connection", "  evidence.of_connection (per connection)")
    _timed(reset_table, "classify", "  verdicts.classify (per RST)")
    _timed(analysis, "listen_queue_evidence", "analysis.listen_queue_evidence (own pass)")
    _timed(document, "connection_row", "  document.connection_row (per row)")
    _timed(retire.ConnectionStore, "row_batches", "ConnectionStore.row_batches (generator made)")
    _timed(retire.Spill, "rows", "  Spill.rows (connection rows, per batch)")
    _timed(columns, "listen_queue", "  columns.listen_queue (rows in batches)")
    _timed(document, "write_json", "document.write_json")
    _timed(text, "write_summary", "text.write_summary")
    _timed(text, "write_table", "text.write_table")
    _timed(text, "write_csv", "text.write_csv")


def run(path: str) -> dict[str, float]:
    instrument()
    stages: dict[str, float] = {}
    start = _clock()
    with open_capture(path, chunk_packets=analysis.CHUNK_PACKETS) as cap:
        chunks = list(cap.chunks())
    stages["read (reader, in process)"] = _clock() - start
    packets = sum(len(c) for c in chunks)

    class _Chunks:
        """The chunks already read, behind the capture surface analyze_capture uses."""

        format, compressed, interfaces, stats = cap.format, cap.compressed, cap.interfaces, cap.stats

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def chunks(self):
            yield from chunks

    analysis._open = lambda *_args, **_kwargs: _Chunks()
    start = _clock()
    result = analysis.analyze_capture(path)
    stages["analyze_capture (track + finish + evidence + verdicts)"] = _clock() - start
    for name, output in (("terminal (summary + table)", _terminal), ("--csv", _csv)):
        start = _clock()
        output(result)
        stages[f"{name}, from the analysis"] = _clock() - start
    result.listen_queue = None  # --json runs alone: its pass over the connections tallies the listen queue
    start = _clock()
    sink = io.StringIO()
    document.write_json([result], sink)
    stages["document (write_json, all rows)"] = _clock() - start
    stages["packets"] = packets
    stages["connections"] = len(result.connections)
    stages["resets"] = len(result.resets)
    stages["json_bytes"] = len(sink.getvalue())
    return stages


def _clock() -> float:
    return CLOCK()


def _terminal(result) -> None:
    doc = document.summary_document([result])
    text.write_summary(doc, io.StringIO())
    text.write_table(doc, io.StringIO())


def _csv(result) -> None:
    text.write_csv(document.summary_document([result]), io.StringIO())


def report(stages: dict[str, float]) -> str:
    lines = [f"packets {stages.pop('packets'):,}, connections {stages.pop('connections'):,}, "
             f"resets {stages.pop('resets'):,}, JSON {stages.pop('json_bytes') / 1e6:.1f} MB"]  # fmt: skip
    lines.append("stage                                                   seconds")
    for name, seconds in stages.items():
        lines.append(f"{name:<55} {seconds:8.2f}")
    lines.append("\ntimed function                                        calls   seconds   CPU s   us/call")
    for name in TIMES:
        calls = CALLS[name]
        lines.append(f"{name:<50} {calls:>10,} {TIMES[name]:9.2f} {CPU[name]:7.2f} "
                     f"{1e6 * TIMES[name] / max(calls, 1):9.1f}")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("capture")
    parser.add_argument("--cprofile", metavar="OUT", help="run under cProfile instead and save the stats")
    parser.add_argument("--cpu", action="store_true", help="CPU seconds of this process instead of wall seconds")
    args = parser.parse_args(argv)
    if args.cpu:
        global CLOCK
        CLOCK = time.process_time
    if args.cprofile:
        import cProfile

        cProfile.runctx("run(args.capture)", globals(), {"args": args, "run": _plain_run}, args.cprofile)
        return 0
    print(report(run(args.capture)))
    return 0


def _plain_run(path: str) -> None:
    result = analysis.analyze_capture(path)
    document.write_json([result], io.StringIO())


if __name__ == "__main__":
    sys.exit(main())
