"""Which files are pieces of one capture.

Servers rotate captures (``tcpdump -G 60 -w 'trace-%s.pcap'``, ``tcpdump -C 100 -W 50``,
``dumpcap -b duration:60``).  The pieces of one capture share a host, a link type and an interface
(the pcapng ``if_name``; classic pcap has none); ordered by their first timestamp they follow each
other in time.  Files that differ in host or interface are separate captures of one document; so
are files of one interface that overlap in time or leave a gap longer than ``max_gap`` (see
:func:`discontinuity`; the run says so in a warning).

The host is not in a capture file: ``--by-host PATTERN`` takes it from the path (a regular
expression searched in the path; its first group, or the whole match, names the host).

Names: a directory stands for the capture files under it, in subdirectories too, hidden ones
excepted (other files are skipped, with a warning),
a name with ``*``, ``?`` or ``[`` that is not a file is a glob pattern, anything else is a file.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from rstscope.reader import open_capture
from rstscope.status import InputError

PROBE_RECORDS = 256
"""Records read per chunk to find a piece's first TCP timestamp (the rest of the file is not read)."""
OVERLAP_TOLERANCE_NS = 1_000_000
"""A piece may start this much before its predecessor's last packet (multi-queue NICs reorder
adjacent records by microseconds); more is an overlap: not the same capture."""
MAX_GAP_S = 300.0
"""Default largest silence between two pieces of one capture (``--max-gap``)."""


@dataclass(frozen=True, kw_only=True)
class Piece:
    """One capture file and what says which capture it belongs to."""

    path: Path
    host: str
    """From ``--by-host`` (empty without it)."""
    link_types: tuple[str, ...]
    interfaces: tuple[str, ...]
    """pcapng interface names (empty strings where absent; one empty name for classic pcap)."""
    first_ns: int | None
    """Timestamp of the first TCP packet, None when the file has none."""
    size: int

    @property
    def key(self) -> tuple:
        """Pieces of one capture have equal keys."""
        return (self.host, self.link_types, self.interfaces)

    @property
    def label(self) -> str:
        """The capture's name in messages: host and interface, when known."""
        names = ",".join(i for i in self.interfaces if i)
        return ":".join(x for x in (self.host, names) if x) or self.path.name


def expand(names: Iterable[str]) -> tuple[list[Path], list[str]]:
    """The files that DIR, GLOB and FILE names stand for (each once, in the order named; a directory's
    and a glob's files sorted by name), and warnings about files skipped in directories."""
    files: dict[Path, bool] = {}  # path -> named explicitly
    warnings = []
    for name in names:
        path = Path(name)
        if path.is_dir():
            members = sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            captures = [p for p in members if _is_capture(p)]
            if not captures:
                plural = "s" if len(members) != 1 else ""
                what = f"{len(members)} file{plural}, none a pcap or pcapng" if members else "empty"
                raise InputError(
                    f"{path}: no capture files in this directory ({what}), and not a run directory (no run.json)"
                )
            skipped = [p.name for p in members if p not in captures]
            if skipped:
                shown = ", ".join(skipped[:3]) + (", ..." if len(skipped) > 3 else "")
                warnings.append(f"{path}: skipped {len(skipped)} file(s) that are not captures ({shown})")
            files.update(dict.fromkeys(captures, False))
        elif not path.exists() and any(c in name for c in "*?["):
            matches = sorted(Path(p) for p in glob.glob(name) if os.path.isfile(p))
            if not matches:
                raise InputError(f"{name}: no file matches this pattern")
            files.update(dict.fromkeys(matches, False))
        else:
            files[path] = True
    return list(files), warnings


def _is_capture(path: Path) -> bool:
    try:
        with open_capture(path, chunk_packets=1):
            return True
    except InputError:
        return False


def host_of(path: Path, pattern: re.Pattern | None) -> str:
    """The host ``--by-host`` names in ``path`` ('' without a pattern)."""
    if pattern is None:
        return ""
    found = pattern.search(str(path))
    if found is None:
        raise InputError(f"{path}: --by-host {pattern.pattern!r} matches nothing in this path")
    return found.group(1) if pattern.groups else found.group(0)


def probe(path: Path, host: str) -> Piece:
    """A piece's link types, interfaces and first timestamp (reads up to its first TCP packet)."""
    with open_capture(path, chunk_packets=PROBE_RECORDS) as cap:
        first = next(iter(cap.chunks()), None)
        interfaces = tuple(i.name or "" for i in cap.interfaces) or ("",)
        links = tuple(sorted({i.link_name for i in cap.interfaces}))
    return Piece(
        path=path,
        host=host,
        link_types=links,
        interfaces=interfaces,
        first_ns=int(first["ts_ns"][0]) if first is not None and len(first) else None,
        size=path.stat().st_size,
    )


def discover(
    names: Iterable[str], *, by_host: str | None = None, on_error: Callable[[str], None] | None = None
) -> tuple[list[list[Piece]], list[str]]:
    """``on_error(message)``: a file that cannot be read is reported and left out (raised when it is
    the only one).  The candidate captures the names hold: pieces grouped by host and interface, each group in time
    order (ties and files without TCP by name); and warnings.  Whether a group is one capture or
    several is decided while reading it (:func:`discontinuity` needs each piece's last timestamp)."""
    try:
        pattern = re.compile(by_host) if by_host else None
    except re.error as exc:
        raise InputError(f"--by-host {by_host!r}: not a regular expression ({exc})") from None
    files, warnings = expand(names)
    groups: dict[tuple, list[Piece]] = {}
    for path in files:
        try:
            piece = probe(path, host_of(path, pattern))
        except InputError as exc:
            if len(files) == 1 or on_error is None:
                raise
            on_error(str(exc))
            continue
        groups.setdefault(piece.key, []).append(piece)
    ordered = [sorted(g, key=_time_order) for g in groups.values()]
    return sorted(ordered, key=lambda g: (g[0].host, _time_order(g[0]))), warnings


def _time_order(piece: Piece) -> tuple:
    return (piece.first_ns is None, piece.first_ns or 0, str(piece.path))


def discontinuity(prev: Piece, prev_last_ns: int | None, piece: Piece, max_gap_s: float) -> str | None:
    """Why ``piece`` cannot continue the capture whose last piece ``prev`` ended at ``prev_last_ns``
    (None: it continues it).  Two pieces starting at the same instant are copies, not pieces."""
    if prev_last_ns is None or piece.first_ns is None:
        return None
    delta = (piece.first_ns - prev_last_ns) / 1e9
    if piece.first_ns < prev_last_ns - OVERLAP_TOLERANCE_NS or piece.first_ns == prev.first_ns:
        return f"{piece.path} overlaps {prev.path} in time (starts {-delta:.3f} s before its last packet)"
    if delta > max_gap_s:
        return f"{piece.path} starts {delta:.1f} s after {prev.path} ends (more than --max-gap {max_gap_s:g} s)"
    return None


def total_size(groups: list[list[Piece]]) -> int:
    return sum(p.size for g in groups for p in g)
