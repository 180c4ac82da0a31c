"""The capture interfaces a file declares (one for classic pcap, one per pcapng IDB)."""

from __future__ import annotations

from dataclasses import dataclass

from rstscope.reader.linktypes import DECODED, LINKTYPE_CLASS_MASK, link_name

MAX_CAPLEN = 262_144
"""Largest record we accept (libpcap's MAXIMUM_SNAPLEN); a larger caplen means a corrupt record."""


@dataclass(frozen=True, kw_only=True)
class Interface:
    """One capture interface: its link type, snapshot length and timestamp unit."""

    link_type: int
    """LINKTYPE_* number as written in the file (pcap: FCS bits 26-31 removed)."""
    link_name: str
    """``ETHERNET``, ``LINUX_SLL``, ``USER0``, ... (``LINKTYPE <n>`` for unknown numbers)."""
    snaplen: int
    """Snapshot length declared for the interface; 0 means "no limit" (pcapng)."""
    ts_resolution_ns: float
    """Length of one timestamp unit in ns: 1000.0 for µs, 1.0 for ns; pcapng ``if_tsresol`` may give
    other powers of ten or powers of two (2**-20 s = 0.95367... ns)."""
    ts_offset_s: int = 0
    """pcapng ``if_tsoffset``: seconds added to every timestamp (0 when absent)."""
    name: str | None = None
    """pcapng ``if_name`` (e.g. ``eth0``); None for classic pcap or when absent."""
    section: int = 0
    """pcapng section (0-based) that declared the interface."""

    @property
    def decoded(self) -> bool:
        """Whether rstscope decodes this link type (the others are counted and skipped)."""
        return (self.link_type & LINKTYPE_CLASS_MASK) in DECODED


def make_interface(link_type: int, **kw) -> Interface:
    """An :class:`Interface` with its ``link_name`` filled in from the link type."""
    return Interface(link_type=link_type, link_name=link_name(link_type), **kw)
