"""One ``watch`` session: the live capture, the engine, the printer, and the optional parts, wired together.

The main loop wakes at least every :data:`TICK_S` (a chunk, or the clock): it feeds what came, then asks
the engine what is due on the wall clock (capture timestamps come from this host's clock), so that a
RST is printed at most ``GRACE + TICK`` plus the work after it was captured.
"""

from __future__ import annotations

import time

import numpy as np

from rstscope.watch.engine import ConnectionEnded, Engine, ListenQueueSeen, ResetSeen
from rstscope.watch.live import CaptureToolError, LiveCapture, StreamEnd
from rstscope.watch.printer import Printer

TICK_S = 0.2
"""The engine's clock step: at most this long between two looks at what is due."""


class Session:
    def __init__(self, args, env, *, snapshot_kinds: tuple[str, ...] = ()) -> None:
        self.args = args
        self.env = env
        self.engine = Engine()
        self.printer = Printer(env.stdout, json=args.json)
        self.metrics = None
        self.kernel = None
        self.ring = None
        self.snapshots = None
        self._snapshot_kinds = snapshot_kinds
        self._end: StreamEnd | None = None
        self._seen_records = 0
        self._joined: dict[int, dict[int, dict]] = {}  # --kernel: connection -> RST frame -> its record
        tee = None
        if args.ring is not None or snapshot_kinds:
            from rstscope.watch.ring import Ring

            self.ring = Ring(args.ring, files=args.ring_files, size_mb=args.ring_size,
                             keep_seconds=args.snapshot_seconds if snapshot_kinds else 0)  # fmt: skip
            tee = self.ring.write
        self.live = LiveCapture(iface=args.iface, bpf=args.filter, tool=args.capture_tool, snaplen=args.snaplen,
                                tee=tee)  # fmt: skip

    def start(self) -> None:
        if self.args.metrics is not None:
            from rstscope.watch.metrics import Metrics

            self.metrics = Metrics()
            self.metrics.serve(self.args.metrics)
        if self.args.kernel:
            from rstscope.watch.kernel import KernelJoin

            self.kernel = KernelJoin()
            self.kernel.start()
            for warning in self.kernel.warnings:
                self.env.warn(warning)
        if self._snapshot_kinds:
            from rstscope.watch.ring import Snapshots

            root = self.args.snapshot_dir or self.args.ring / "snapshots"
            self.snapshots = Snapshots(root, self.ring, seconds=self.args.snapshot_seconds, iface=self.args.iface)
        self.live.start()
        extras = [name for name, on in (("kernel", self.kernel), ("metrics", self.metrics), ("ring", self.ring)) if on]
        self.env.stderr.write(
            f"rstscope: watching {self.args.iface} with {self.live.tool}"
            + (f" ({', '.join(extras)})" if extras else "")
            + "; Ctrl-C ends the session\n"
        )
        self.env.stderr.flush()

    def loop(self, deadline: float | None) -> None:
        """Until the stream ends (the tool stopped) or ``deadline`` (monotonic); Ctrl-C raises through."""
        while self._end is None:
            for item in self.live.poll(TICK_S):
                if isinstance(item, StreamEnd):
                    self._end = item
                    break
                self._feed(item)
            self._count_records()
            self._handle(self.engine.due(time.time_ns()))
            if deadline is not None and time.monotonic() >= deadline:
                return

    def finish(self) -> None:
        """Stop the capture, judge what is left, print the summary; CaptureToolError if the tool died."""
        died = self._end is not None and not self.live.stopping
        self.live.stop()
        drain_until = time.monotonic() + 10
        while self._end is None and time.monotonic() < drain_until:
            for item in self.live.poll(TICK_S):
                if isinstance(item, StreamEnd):
                    self._end = item
                    break
                self._feed(item)
        self.live.join()
        self._count_records()
        self._handle(self.engine.finish())
        stats = self.live.stats()
        stats.setdefault("records", self.live.records)
        if self.metrics is not None and stats.get("dropped"):
            self.metrics.packets_dropped.inc(stats["dropped"])
        self.printer.summary(self.engine.counts, stats)
        if self._end is not None:
            for warning in self._end.warnings:
                if not died:
                    self.env.warn(warning)
        if died:
            error = self._end.error
            detail = f": {error}" if error is not None else ""
            raise CaptureToolError(f"{self.live.tool} stopped capturing on its own: {self.live.message()}{detail}")

    def close(self) -> None:
        """Everything this session started is stopped and removed (always runs)."""
        self.live.stop()
        for part in (self.kernel, self.metrics, self.ring):
            if part is not None:
                part.close()

    def _feed(self, chunk: np.ndarray) -> None:
        for event in self.engine.feed(chunk):
            self._listen_queue(event)

    def _count_records(self) -> None:
        records = self.live.records
        if self.metrics is not None and records > self._seen_records:
            self.metrics.packets_seen.inc(records - self._seen_records)
        self._seen_records = records

    def _handle(self, events) -> None:
        accounts = self._kernel_accounts(events) if self.kernel is not None else {}
        for event in events:
            if isinstance(event, ResetSeen):
                self._reset(event, accounts)
            elif isinstance(event, ConnectionEnded):
                kernel = None
                if self.kernel is not None:
                    joined = self._joined.pop(event.connection.id, {})
                    joined.update((r.frame, accounts[r.frame]) for r in event.others if r.frame in accounts)
                    kernel = [joined[r.frame] for r in event.others]
                self.printer.ended(event, kernel)
                if self.metrics is not None and event.echoes:
                    self.metrics.echoes.inc(event.echoes)

    def _kernel_accounts(self, events) -> dict[int, dict]:
        """The kernel's account of the RSTs these events print, by frame: joined all at once, in capture
        order, as the lab joins a capture's.  Joined connection by connection instead, a connection's echo
        took a listener's record (``dest=0.0.0.0:0``: any peer) that belongs to another connection's RST
        captured before it."""
        fresh: dict[int, object] = {}
        for event in events:
            if isinstance(event, ResetSeen):
                fresh.update((r.frame, r) for r in event.resets)
            elif isinstance(event, ConnectionEnded):
                joined = self._joined.get(event.connection.id, {})
                fresh.update((r.frame, r) for r in event.others if r.frame not in joined)
        frames = sorted(fresh)
        return dict(zip(frames, self.kernel.join([fresh[f] for f in frames]), strict=True))

    def _reset(self, event: ResetSeen, accounts: dict[int, dict]) -> None:
        record = event.record
        kernel = None
        if self.kernel is not None:
            joined = {r.frame: accounts[r.frame] for r in event.resets}
            self._joined[record.evidence.connection] = joined
            kernel = joined[record.frame]
        self.printer.reset(event, kernel)
        if self.metrics is not None:
            self.metrics.resets.labels(verdict=record.verdict.value, origin=record.evidence.origin.value).inc()
            if record.evidence.in_flight is not None:
                self.metrics.in_flight.observe(record.evidence.in_flight)
        if self.snapshots is not None and record.verdict.value in self._snapshot_kinds:
            path = self.snapshots.write(event, self.printer)
            if path is not None and not self.args.json:
                self.env.stderr.write(f"rstscope: snapshot of #{record.evidence.connection}: {path}\n")

    def _listen_queue(self, event: ListenQueueSeen) -> None:
        self.printer.listen_queue(event)
        if self.metrics is not None:
            self.metrics.listen_queue.labels(kind=event.kind).inc()
