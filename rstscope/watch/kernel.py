"""``--kernel``: the kernel's ``tcp:tcp_send_reset`` reason of each RST, joined live.

A private tracefs instance (:class:`rstscope.lab.trace.TraceSession`, named ``rs-<pid>-<hex>-watch`` so
that ``rstscope lab --cleanup`` removes it if this process is killed) is read through its
``trace_pipe`` by a thread; records go to the capture's clock and wait in a window of the last
:data:`KEEP_S` seconds.  A connection's RSTs are joined when its primary is printed (after the grace),
the later ones when it ends, as the lab's ground truth does (:func:`rstscope.lab.groundtruth.match_resets`):
see :meth:`KernelJoin.join`.  The join *disagrees* when the
verdict names kernel reasons (``Verdict.kernel_reasons``) and the record's reason is not one of them, or
when the verdict says the endpoint did not send the RST (``middlebox``, ``ignored``) and this host's
kernel logged it.

Only resets this host sends are traced: watching a link that carries other hosts' traffic, most RSTs
have no record (``reason`` null), which is not a disagreement.
"""

from __future__ import annotations

import contextlib
import os
import random
import select
import threading
import time
from collections import deque

from rstscope.analysis import ResetRecord
from rstscope.lab import trace
from rstscope.status import InputError
from rstscope.verdicts import Verdict

NOT_SENT_BY_ENDPOINT = (Verdict.MIDDLEBOX, Verdict.IGNORED)
"""Verdicts that say the endpoint whose address the RST bears did not send it: a record disagrees."""
KEEP_S = 30.0
"""Records older than this (capture clock) are forgotten."""
EARLY_S = 0.05
"""A record may be logged this long after its packet was captured (clocks agree to about 1 ms)."""
CATCH_UP_S = 0.2
"""How long a join waits for the trace reader to reach the RSTs' time: 0.5 s grace + 0.2 s step + this
stays within the 1 s budget."""
WINDOW_S = 2.0
"""... and up to this long before it (a queue between the sender and the capture point)."""


class KernelJoin:
    def __init__(self) -> None:
        self.session = trace.TraceSession(name=f"rs-{os.getpid()}-{random.randrange(65536):04x}-watch")
        self.warnings: list[str] = []
        self._records: deque[dict] = deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fd: int | None = None
        self._caught_up = 0.0
        """Wall-clock time up to which the trace has been read (the capture's clock, this host)."""

    def start(self) -> None:
        """Create the instance and start reading; InputError (exit 2) when tracefs cannot be used."""
        try:
            self.session.start()
            # Only the resets: the lab's other events (socket states, SYN-ACKs) are many per connection,
            # and a reader that parses them falls behind on a busy host.
            for event in list(self.session.enabled):
                if event != "tcp/tcp_send_reset":
                    (self.session.instance / "events" / event / "enable").write_text("0\n")
                    self.session.enabled.remove(event)
            if "tcp/tcp_send_reset" not in self.session.enabled:
                raise trace.TraceUnavailable("this kernel has no tcp:tcp_send_reset tracepoint")
            self._fd = os.open(self.session.instance / "trace_pipe", os.O_RDONLY | os.O_NONBLOCK)
        except (trace.TraceUnavailable, OSError) as exc:
            self.close()
            raise InputError(f"--kernel: {exc}") from None
        self.warnings += self.session.warnings
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        pending = ""
        while not self._stop.is_set():
            ready, _, _ = select.select([self._fd], [], [], 0.05)
            if not ready:
                self._caught_up = time.time()  # nothing pending: every reset until now has been read
                continue
            try:
                data = os.read(self._fd, 1 << 16)
            except BlockingIOError:
                continue
            except OSError:
                return
            if not data:
                time.sleep(0.05)
                continue
            pending += data.decode("utf-8", "replace")
            *lines, pending = pending.split("\n")
            fresh = []
            for line in lines:
                if "tcp_send_reset:" not in line:
                    continue
                record = trace.parse_line(line)
                if record is not None and record["event"] == "tcp_send_reset":
                    record["time"] = record["boot_time"] + self.session.offset
                    fresh.append(record)
            if fresh:
                with self._lock:
                    self._records.extend(fresh)
                    while self._records and self._records[0]["time"] < fresh[-1]["time"] - KEEP_S:
                        self._records.popleft()

    def join(self, records: list[ResetRecord]) -> list[dict]:
        """The kernel's account of each of these RSTs (in capture order; of any connections): ``reason``,
        ``state``, ``listener``, ``disagrees`` (``reason`` None when no record matched).

        As the lab's ground truth joins them: each record, in time order, goes to the first RST not yet
        matched from the same sender to the same peer (a listener's: from the same sender) captured
        between EARLY_S before and WINDOW_S after it.  A primary and its first echo are often microseconds
        apart, closer than the two clocks agree: order, not time, tells them apart."""
        out: list[dict | None] = [None] * len(records)
        latest = max((r.evidence.time_ns for r in records), default=0) / 1e9
        deadline = time.monotonic() + CATCH_UP_S
        while self._caught_up < latest and time.monotonic() < deadline:
            time.sleep(0.01)  # the reader is behind these RSTs: give it a moment
        with self._lock:
            for listener in (False, True):
                for candidate in sorted(self._records, key=lambda r: r["time"]):
                    if candidate.get("used") or bool(candidate.get("listener")) is not listener:
                        continue
                    for i, record in enumerate(records):
                        ev = record.evidence
                        if out[i] is not None or ev.src != candidate.get("src"):
                            continue
                        if not listener and ev.dst != candidate.get("dst"):
                            continue
                        lag = ev.time_ns / 1e9 - candidate["time"]
                        if lag < -EARLY_S:
                            continue
                        if lag <= WINDOW_S:
                            out[i] = self._account(record, candidate)
                            candidate["used"] = True
                        break
        none = {"reason": None, "state": None, "listener": None, "disagrees": False}
        return [o if o is not None else dict(none) for o in out]

    @staticmethod
    def _account(record: ResetRecord, match: dict) -> dict:
        reasons = record.verdict.kernel_reasons
        reason = match.get("reason")
        # For a middlebox or ignored verdict, any record disagrees: this host's kernel did send the RST.
        disagrees = record.verdict in NOT_SENT_BY_ENDPOINT or (bool(reasons) and reason not in reasons)
        return {"reason": reason, "state": match.get("state"), "listener": bool(match.get("listener")),
                "disagrees": disagrees}  # fmt: skip

    def close(self) -> None:
        """Stop reading, remove the instance (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
            self._thread = None
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        self.session.remove()
