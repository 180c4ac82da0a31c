"""The kernel's own account of resets: a private tracefs instance, parsed to JSON records.

A run creates ``instances/<name>`` under tracefs (never the global buffer), sets
its ``trace_clock`` to ``boot``, enables the events in :data:`EVENTS`, and at the
end reads the ``trace`` file.  Timestamps are moved to the capture's clock by
adding CLOCK_REALTIME − CLOCK_BOOTTIME measured at start (agreement ~1 ms, see
RESETS.md).

If tracefs is not mounted, it is mounted on a private directory for the run and
unmounted at teardown, so the host's mount table is left as it was.

Limits: tracepoints are host-wide and carry no network namespace.  Records are
attributed to a run by its addresses (every lab run has its own /24) and, for
``kfree_skb``, by the listening socket's address (``rx_sk``), learnt from
``inet_sock_set_state``.  A listener's resets print ``dest=0.0.0.0:0``: the
connection they belong to is found through the capture (``groundtruth``).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

TRACEFS_MOUNTS = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))
"""Where tracefs is usually mounted."""

EVENTS = (
    "tcp/tcp_send_reset",
    "tcp/tcp_receive_reset",
    "tcp/tcp_retransmit_synack",
    "sock/inet_sock_set_state",
    "skb/kfree_skb",
)
"""Events enabled in the run's instance (``kfree_skb`` filtered to TCP_LISTEN_OVERFLOW)."""

KFREE_REASON = "TCP_LISTEN_OVERFLOW"
"""The only kfree_skb drop reason recorded: a handshake ACK dropped at a full accept queue."""

BUFFER_KB = 8192
"""Per-CPU ring size of the instance; overruns are counted and reported."""

NULL_POINTERS = frozenset({"0", "0000000000000000", "00000000", "(null)", "(nil)"})
"""Ways a NULL ``%p`` prints: ``skbaddr`` NULL means an active reset (no triggering packet)."""

# "  <idle>-0  [001] ..s1.  5678.123456: tcp_send_reset: skbaddr=... src=..."
# Task names may contain spaces and dashes; the pid is the last "-digits" before the cpu.
_LINE = re.compile(
    r"^\s*(?P<task>.*?)-(?P<pid>\d+)\s+(?:\(\s*[-\d]+\)\s+)?\[(?P<cpu>\d+)\]\s+"
    r"(?:(?P<flags>[^\s\[\]]{4,6})\s+)?(?P<ts>\d+\.\d+):\s+(?P<event>\w+):\s+(?P<body>.*)$"
)
_FIELD = re.compile(r"(\w+)=(\S+)")


class TraceUnavailable(Exception):
    """tracefs cannot be used; the message says why (the run goes on without it)."""


def parse_line(line: str) -> dict | None:
    """One ``trace`` line -> a raw record (``boot_time`` in seconds), or None for comments/noise."""
    match = _LINE.match(line.rstrip("\n"))
    if match is None:
        return None
    body = match["body"]
    record: dict = {
        "event": match["event"],
        "boot_time": float(match["ts"]),
        "task": match["task"].strip(),
        "pid": int(match["pid"]),
        "cpu": int(match["cpu"]),
    }
    record.update(parse_body(match["event"], body))
    return record


def parse_body(event: str, body: str) -> dict:
    """The fields of one event body (as RESETS.md prints them: ``src=… dest=… state=… reason=…``)."""
    fields = dict(_FIELD.findall(body))
    if event == "kfree_skb":
        reason = re.search(r"reason:\s*(\S+)", body)
        fields["reason"] = reason[1] if reason else None
    return _normalise(event, fields)


def _endpoint(addr: str, port: str) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def _normalise(event: str, fields: dict) -> dict:
    """Event fields -> the record's common keys (``src``, ``dst``, ``state``, ``reason``, ...)."""
    out: dict = {}
    if event == "tcp_send_reset":
        out["src"] = fields.get("src")
        out["dst"] = fields.get("dest")
        out["state"] = fields.get("state")
        out["reason"] = fields.get("reason")
        out["skaddr"] = fields.get("skaddr")
        skb = fields.get("skbaddr")
        out["skbaddr"] = skb
        # An active reset (close, abort, timer) has no triggering packet.
        out["active"] = skb in NULL_POINTERS if skb is not None else None
        out["listener"] = out["dst"] in ("0.0.0.0:0", "[::]:0")
    elif event in ("tcp_receive_reset", "tcp_retransmit_synack", "inet_sock_set_state"):
        v6 = fields.get("family") == "AF_INET6"
        saddr = fields.get("saddrv6" if v6 else "saddr", "")
        daddr = fields.get("daddrv6" if v6 else "daddr", "")
        out["src"] = _endpoint(saddr, fields.get("sport", "0"))
        out["dst"] = _endpoint(daddr, fields.get("dport", "0"))
        out["skaddr"] = fields.get("skaddr")
        if event == "inet_sock_set_state":
            if fields.get("protocol") not in (None, "IPPROTO_TCP"):
                out["protocol"] = fields.get("protocol")
            out["oldstate"] = fields.get("oldstate")
            out["newstate"] = fields.get("newstate")
        if event == "tcp_receive_reset":
            out["sock_cookie"] = fields.get("sock_cookie")
    elif event == "kfree_skb":
        out["reason"] = fields.get("reason")
        out["rx_sk"] = fields.get("rx_sk")
        out["skbaddr"] = fields.get("skbaddr")
        out["location"] = fields.get("location")
    else:
        out.update(fields)
    return out


def to_capture_clock(records: list[dict], offset: float) -> list[dict]:
    """Add ``time`` (epoch seconds, the capture's clock) = ``boot_time`` + ``offset``."""
    for record in records:
        record["time"] = round(record["boot_time"] + offset, 6)
    return records


def clock_offset(samples: int = 7) -> float:
    """CLOCK_REALTIME − CLOCK_BOOTTIME, from the tightest of a few bracketed readings."""
    best: tuple[float, float] | None = None
    for _ in range(samples):
        before = time.clock_gettime(time.CLOCK_BOOTTIME)
        real = time.clock_gettime(time.CLOCK_REALTIME)
        after = time.clock_gettime(time.CLOCK_BOOTTIME)
        width = after - before
        if best is None or width < best[0]:
            best = (width, real - (before + after) / 2)
    return best[1]


def keep_for_run(records: list[dict], addresses: dict[str, str] | None, ports: set[int] | None = None) -> list[dict]:
    """Keep the records that belong to a run, and give each a ``netns`` label.

    ``addresses`` maps an IP to its side (``{"10.201.3.1": "server", ...}``).  A
    record belongs to the run when its source address (for a listener's reset,
    its listening address) is one of them and — when ``ports`` is given (loopback
    runs share 127.0.0.1) — one of its ports is in ``ports``.

    ``kfree_skb`` carries no address, only the receiving socket (``rx_sk``, the
    listener for an accept-queue overflow).  The run's listeners are known from
    its listener resets and SYN-ACK retransmissions (both carry ``skaddr``); a
    drop on one of them is kept with ``netns`` ``server``.  When no listener of
    the run is known, drops are kept with ``netns`` ``unattributed``: the trace is
    host-wide and another run could have caused them.

    ``addresses=None`` (``rstscope capture`` on the host) keeps every record, with
    ``netns`` ``host``.
    """
    if addresses is None:
        for record in records:
            record["netns"] = "host"
        return records
    listeners: set[str] = set()
    kept: list[dict] = []
    drops: list[dict] = []
    for record in records:
        if record["event"] == "kfree_skb":
            drops.append(record)
            continue
        src_ip, _, src_port = (record.get("src") or "").rpartition(":")
        _, _, dst_port = (record.get("dst") or "").rpartition(":")
        src_ip = src_ip.strip("[]")
        if src_ip not in addresses:
            continue
        if ports is not None and not ({_int(src_port), _int(dst_port)} & ports):
            continue
        record["netns"] = addresses[src_ip]
        if record.get("skaddr") and (
            record["event"] == "tcp_retransmit_synack"
            or (record["event"] == "tcp_send_reset" and record.get("state") == "TCP_LISTEN")
        ):
            listeners.add(record["skaddr"])
        kept.append(record)
    for record in drops:
        if listeners and record.get("rx_sk") not in listeners:
            continue
        record["netns"] = "server" if listeners else "unattributed"
        kept.append(record)
    kept.sort(key=lambda r: r["boot_time"])
    return kept


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return -1


@dataclass(kw_only=True)
class TraceSession:
    """A private tracefs instance, from ``start()`` to ``remove()`` (always call ``remove``)."""

    name: str
    root: Path | None = None
    """tracefs mount point in use."""
    mounted_here: Path | None = None
    """Set when this session mounted tracefs itself (unmounted by ``remove``)."""
    instance: Path | None = None
    offset: float = 0.0
    enabled: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def start(self) -> None:
        """Locate (or mount) tracefs, create the instance, enable the events, start tracing."""
        self.root = self._find_or_mount()
        instances = self.root / "instances"
        if not instances.is_dir():
            raise TraceUnavailable(f"{instances} does not exist: this kernel has no tracefs instances")
        self.instance = instances / self.name
        try:
            self.instance.mkdir()
        except OSError as exc:
            self.instance = None
            raise TraceUnavailable(f"cannot create trace instance {instances / self.name}: {exc.strerror}") from None
        self._write("trace_clock", "boot")
        self._write("buffer_size_kb", str(BUFFER_KB))
        for event in EVENTS:
            directory = self.instance / "events" / event
            if not directory.is_dir():
                self.warnings.append(f"tracepoint {event} does not exist in this kernel")
                continue
            if event == "skb/kfree_skb":
                number = _enum_value(directory / "format", KFREE_REASON)
                if number is None:
                    self.warnings.append(f"kfree_skb has no reason {KFREE_REASON}: not traced")
                    continue
                self._write(f"events/{event}/filter", f"reason == {number}")
            self._write(f"events/{event}/enable", "1")
            self.enabled.append(event)
        self.offset = clock_offset()
        self._write("tracing_on", "1")

    def stop(self) -> tuple[list[dict], dict]:
        """Stop tracing; return (records on the capture's clock, stats with overruns)."""
        if self.instance is None:
            return [], {}
        self._write("tracing_on", "0")
        offset_end = clock_offset()
        text = (self.instance / "trace").read_text(errors="replace")
        records = [r for r in (parse_line(line) for line in text.splitlines()) if r is not None]
        overruns = 0
        per_cpu = self.instance / "per_cpu"
        for stats in per_cpu.glob("cpu*/stats") if per_cpu.is_dir() else ():
            match = re.search(r"^overrun:\s*(\d+)", stats.read_text(), re.M)
            overruns += int(match[1]) if match else 0
        if overruns:
            self.warnings.append(f"kernel trace lost {overruns} events (ring buffer overrun)")
        stats = {
            "instance": str(self.instance),
            "events": self.enabled,
            "clock": "boot",
            "offset": self.offset,
            "offset_drift": offset_end - self.offset,
            "records": len(records),
            "overruns": overruns,
            "mounted_here": self.mounted_here is not None,
        }
        return to_capture_clock(records, self.offset), stats

    def remove(self) -> None:
        """Disable events, remove the instance, unmount tracefs if this session mounted it.  Idempotent."""
        if self.instance is not None:
            with contextlib.suppress(OSError):
                self._write("tracing_on", "0")
            for event in self.enabled:
                with contextlib.suppress(OSError):
                    self._write(f"events/{event}/enable", "0")
            for attempt in range(20):
                try:
                    self.instance.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:  # EBUSY while a reader still holds trace_pipe
                    if attempt == 19:
                        self.warnings.append(f"could not remove {self.instance}: {exc.strerror}")
                    time.sleep(0.1)
            self.instance = None
        if self.mounted_here is not None:
            result = subprocess.run(["umount", str(self.mounted_here)], capture_output=True, text=True)
            if result.returncode == 0:
                with contextlib.suppress(OSError):
                    self.mounted_here.rmdir()
            else:
                self.warnings.append(f"could not unmount {self.mounted_here}: {result.stderr.strip()}")
            self.mounted_here = None

    def _write(self, relative: str, value: str) -> None:
        assert self.instance is not None
        (self.instance / relative).write_text(value + "\n")

    def _find_or_mount(self) -> Path:
        for path in TRACEFS_MOUNTS:
            if (path / "instances").is_dir():
                return path
        if os.geteuid() != 0:
            raise TraceUnavailable("tracefs is not mounted and mounting it needs root")
        mount_point = Path(tempfile.mkdtemp(prefix=f"{self.name}-tracefs-"))
        result = subprocess.run(["mount", "-t", "tracefs", "nodev", str(mount_point)], capture_output=True, text=True)
        if result.returncode != 0:
            mount_point.rmdir()
            raise TraceUnavailable(f"cannot mount tracefs: {result.stderr.strip() or result.returncode}")
        self.mounted_here = mount_point
        return mount_point


def _enum_value(format_file: Path, name: str) -> int | None:
    """The number of symbol ``name`` in an event's ``print fmt`` (``{ 40, "TCP_LISTEN_OVERFLOW" }``)."""
    try:
        text = format_file.read_text()
    except OSError:
        return None
    match = re.search(r"\{\s*(\d+),\s*\"" + re.escape(name) + r"\"\s*\}", text)
    return int(match[1]) if match else None


def tracefs_available() -> tuple[bool, str]:
    """Whether a run can trace, and why not (without changing anything)."""
    for path in TRACEFS_MOUNTS:
        if (path / "events" / "tcp" / "tcp_send_reset").is_dir():
            return True, f"tracefs at {path}"
    if os.geteuid() != 0:
        return False, "tracefs is not mounted and mounting it needs root"
    filesystems = Path("/proc/filesystems")
    if filesystems.exists() and "tracefs" not in filesystems.read_text():
        return False, "this kernel has no tracefs"
    return True, "tracefs not mounted: the run mounts it privately and unmounts it afterwards"
