"""Figures of an analysis: overview, per-connection time-sequence graph, listen queue, comparison.

Every figure is a :class:`matplotlib.figure.Figure` built without pyplot (no global state, no GUI
backend: it renders headless, and shows inline in a notebook).  Save with :func:`save`.

What each figure reads:

* :func:`overview_figure`, :func:`comparison_figure`: the analysis document only.
* :func:`time_sequence_figure`: the document, plus the connection's own packets (the one figure
  that needs them, STYLE.md "Report and plots"), read by :func:`connection_packets` from the
  capture named in the document, filtered by the connection's 4-tuple and frame range.
* :func:`listen_queue_figure`: the document, plus the times of the SYN and SYN-ACK segments
  (:func:`handshake_times`): the document counts retransmissions per connection but does not
  carry their times.  Only segments with the SYN flag are kept.

Time is seconds since the first SYN of the capture (overview, listen queue) or of the
connection (time-sequence graph).  Sequence numbers are relative to each side's ISN (its
SYN), as in Wireshark: the first payload byte is 1.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib import rc_context
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import FuncFormatter, MaxNLocator

from rstscope import packets as P
from rstscope.report import records as R
from rstscope.seqnum import seq_diff_array
from rstscope.verdicts import Verdict

STYLE = {
    "font.size": 11,
    "axes.titlesize": 13,
    "axes.titleweight": "bold",
    "axes.labelsize": 11,
    "legend.fontsize": 9.5,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "svg.fonttype": "none",  # SVG text stays text: smaller, searchable
}
"""Matplotlib settings every figure is drawn under."""

OUTCOME_COLOURS: dict[str, str] = {
    "close-race": "#d62728",
    "backlog": "#7b3fb5",
    "late-data": "#ff7f0e",
    "abort": "#8c564b",
    "refused": "#e377c2",
    "stale": "#bcbd22",
    "middlebox": "#1f77b4",
    "ignored": "#c7c7c7",
    "keepalive": "#9467bd",
    "lone": "#dbdb8d",
    "unknown": "#17becf",
    "echo": "#999999",
    R.OUTCOME_CLEAN: "#2ca02c",
    R.OUTCOME_INCOMPLETE: "#b0b0b0",
}
"""Connection outcome (verdict or way of ending) -> colour; the same in every figure."""

DATA, RETRANSMITTED, ACK_LINE, SND_NXT, ECHO_GREY = "#1f5fbf", "#d62728", "#2ca02c", "#555555", "#888888"
PNG_DPI = 130
MAX_FIGURE_HEIGHT = 16.0
"""Inches: the overview stops growing here; rows get thinner instead."""


def save(fig: Figure, out_dir: str | os.PathLike, stem: str, formats: tuple[str, ...] = ("png", "svg")) -> list[Path]:
    """Write ``fig`` as ``out_dir/stem.<format>`` for each format; returns the paths."""
    from rstscope.output import atomic_path, make_dir

    out = make_dir(out_dir)
    paths = []
    for fmt in formats:
        path = out / f"{stem}.{fmt}"
        with atomic_path(path) as tmp:  # a full disk or Ctrl-C leaves no half-drawn figure
            fig.savefig(tmp, format=fmt, dpi=PNG_DPI, bbox_inches="tight", metadata=_metadata(fmt))
        paths.append(path)
    return paths


def _metadata(fmt: str) -> dict:
    # No creation date in SVG/PNG metadata: the same analysis gives the same bytes.
    return {"Date": None} if fmt == "svg" else {}


def _colour(outcome: str) -> str:
    return OUTCOME_COLOURS.get(outcome, "#17becf")


def _bytes_axis(ax, axis: str = "y") -> None:
    fmt = FuncFormatter(lambda v, _pos: f"{v:,.0f}")
    (ax.yaxis if axis == "y" else ax.xaxis).set_major_formatter(fmt)


# -------------------------------------------------------------------------------------------- overview


def overview_title(doc: dict, label: str | None = None) -> str:
    conns = doc["connections"]
    lost = [c for c in conns if c["lost_data"]]
    prefix = f"{label}: " if label else ""
    resets = sum(1 for c in conns if R.client_reset(c))
    tail = f"; {resets} clients got ECONNRESET" if any("client_outcome" in c for c in conns) else ""
    if lost:
        kinds = Counter(c["verdict"] for c in lost)
        what = ", ".join(f"{n} {v}" for v, n in kinds.most_common())
        return f"{prefix}{len(lost)} of {len(conns)} connections lost data ({what}){tail}"
    reset = sum(1 for c in conns if c.get("verdict"))
    if reset:
        kinds = Counter(c["verdict"] for c in conns if c.get("verdict"))
        what = ", ".join(f"{n} {v}" for v, n in kinds.most_common())
        return f"{prefix}{reset} of {len(conns)} connections reset ({what}), none with data at risk{tail}"
    clean = sum(1 for c in conns if R.connection_outcome(c) == R.OUTCOME_CLEAN)
    return f"{prefix}no reset: {clean} of {len(conns)} connections closed cleanly{tail}"


def overview_figure(doc: dict, *, label: str | None = None) -> Figure:
    """One row per connection from its first to its last packet, coloured by outcome, RSTs marked."""
    n = max(1, len(doc["connections"]))
    height = min(MAX_FIGURE_HEIGHT, 2.4 + 0.24 * n)
    with rc_context(STYLE):
        fig = Figure(figsize=(11.5, height), layout="constrained")
        ax = fig.add_subplot()
        _draw_overview(ax, doc, plot_height_in=height - 1.6, legend=True)
        ax.set_title(overview_title(doc, label), loc="left")
    return fig


def _draw_overview(ax, doc: dict, *, plot_height_in: float, legend: bool, t0: float | None = None,
                   compact: bool = False) -> None:  # fmt: skip
    conns = sorted(doc["connections"], key=lambda c: (c["start"], c.get("capture", 0), c["id"]))
    n = len(conns)
    ax.set_xlabel("time since first SYN (s)")
    if not n:
        ax.text(0.5, 0.5, "no TCP connection in the capture", ha="center", va="center", transform=ax.transAxes)
        return
    t0 = R.first_syn_time(doc) if t0 is None else t0
    rows = {(c.get("capture", 0), c["id"]): i for i, c in enumerate(conns)}
    y = np.arange(n)
    starts = np.array([c["start"] - t0 for c in conns])
    ends = np.array([c["end"] - t0 for c in conns])
    outcomes = [R.connection_outcome(c) for c in conns]
    colours = [_colour(o) for o in outcomes]
    row_pt = max(0.2, plot_height_in) * 72 / n
    width = float(np.clip(row_pt * 0.6, 0.8, 9.0))
    mark = float(np.clip(row_pt * 0.9, 2.5, 9.0))
    ax.hlines(y, starts, ends, colors=colours, linewidth=width, zorder=2)
    ax.scatter(starts, y, marker="|", s=(mark * 1.2) ** 2, c=colours, linewidths=1.2, zorder=3)

    by_conn = R.resets_by_connection(doc)
    prim_x, prim_y, prim_c, echo_x, echo_y, econn_x, econn_y = [], [], [], [], [], [], []
    for key, resets in by_conn.items():
        row = rows.get(key)
        if row is None:
            continue
        for r in resets:
            if r["verdict"] == Verdict.ECHO.value:
                echo_x.append(r["time"] - t0)
                echo_y.append(row)
            else:
                prim_x.append(r["time"] - t0)
                prim_y.append(row)
                prim_c.append(_colour(r["verdict"]))
    for i, c in enumerate(conns):
        if R.client_reset(c):
            resets = by_conn.get((c.get("capture", 0), c["id"]), [])
            # clients.jsonl times are not in the document: mark where the client received its reset
            primary = R.primary_reset(c, [r for r in resets if r["sender"] != "client"] or resets)
            econn_x.append((primary["time"] if primary else c["end"]) - t0)
            econn_y.append(i)
    ax.scatter(echo_x, echo_y, marker=".", s=max(2.0, mark * 0.8), c=ECHO_GREY, zorder=4, linewidths=0)
    ax.scatter(prim_x, prim_y, marker="X", s=(mark * 1.25) ** 2, c=prim_c, edgecolors="black", linewidths=0.6,
               zorder=5)  # fmt: skip
    ax.scatter(econn_x, econn_y, marker="o", s=(mark * 2.0) ** 2, facecolors="none", edgecolors="black",
               linewidths=1.1, zorder=6)  # fmt: skip

    ax.set_ylim(n - 0.5, -0.5)
    ax.grid(axis="y", visible=False)
    span = max(float(ends.max()), 1e-3)
    ax.set_xlim(-0.02 * span, span * 1.02)
    if n <= 40 and not compact:
        ax.set_yticks(y, [f"#{c['id']}  :{c['client'].rpartition(':')[2]}" for c in conns])
        ax.set_ylabel("connection (id, client port)")
    else:
        step = max(1, math.ceil(n / (12 if compact else 25)))
        ticks = y[::step]
        ax.set_yticks(ticks, [f"#{conns[i]['id']}" for i in ticks])
        ax.set_ylabel(f"{n} connections, by first SYN")
    if legend:
        counts = Counter(outcomes)
        handles = [Patch(color=_colour(o), label=f"{o} ({counts[o]})") for o in R.OUTCOME_ORDER if counts[o]]
        handles += [Patch(color=_colour(o), label=f"{o} ({counts[o]})") for o in counts if o not in R.OUTCOME_ORDER]
        if prim_x:
            handles.append(Line2D([], [], marker="X", ls="", color="#666", mec="black", ms=9, label="RST (primary)"))
        if echo_x:
            handles.append(Line2D([], [], marker=".", ls="", color=ECHO_GREY, ms=7,
                                  label=f"echo RST ({len(echo_x)})"))  # fmt: skip
        if econn_x:
            handles.append(Line2D([], [], marker="o", ls="", mfc="none", mec="black", ms=9,
                                  label="client read ECONNRESET"))  # fmt: skip
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0,
                  title="outcome", frameon=False)  # fmt: skip


# ------------------------------------------------------------------------- per-connection packets


@dataclass(frozen=True, kw_only=True)
class ConnectionPackets:
    """One connection's segments in capture order (numpy arrays of equal length)."""

    frame: np.ndarray
    time: np.ndarray
    """Seconds since the connection's first packet."""
    side: np.ndarray
    """0 = client (originator), 1 = server."""
    flags: np.ndarray
    seq: np.ndarray
    """Relative to the sender's ISN (its SYN), else to its first sequence number (int64)."""
    ack: np.ndarray
    """Relative to the peer's ISN, as float; NaN where the ACK flag is not set."""
    payload: np.ndarray
    t0: float
    """Epoch seconds of the first packet."""

    def __len__(self) -> int:
        return len(self.frame)


def _endpoint(text: str) -> tuple[int, int, int]:
    addr, _, port = text.rpartition(":")
    hi, lo = P.parse_addr(addr.strip("[]"))
    return hi, lo, int(port)


def connection_packets(doc: dict, conn: dict, *, capture: str | os.PathLike | None = None) -> ConnectionPackets:
    """Read one connection's packets from its capture (``capture`` overrides the document's path).

    Rows are chosen by the connection record's 4-tuple and its ``first_frame``..``last_frame``.
    """
    from rstscope.reader import open_capture

    path = capture or doc["captures"][conn.get("capture", 0)]["path"]
    c_hi, c_lo, c_port = _endpoint(conn["client"])
    s_hi, s_lo, s_port = _endpoint(conn["server"])
    first, last = conn["first_frame"], conn["last_frame"]
    parts = []
    with open_capture(path) as cap:
        for table in cap.chunks():
            if int(table["frame"][0]) > last:
                break
            t = table[(table["frame"] >= first) & (table["frame"] <= last) & (table["decode_error"] == 0)]
            fwd = (
                (t["src_hi"] == c_hi) & (t["src_lo"] == c_lo) & (t["src_port"] == c_port)
                & (t["dst_hi"] == s_hi) & (t["dst_lo"] == s_lo) & (t["dst_port"] == s_port)
            )  # fmt: skip
            rev = (
                (t["src_hi"] == s_hi) & (t["src_lo"] == s_lo) & (t["src_port"] == s_port)
                & (t["dst_hi"] == c_hi) & (t["dst_lo"] == c_lo) & (t["dst_port"] == c_port)
            )  # fmt: skip
            keep = t[fwd | rev]
            parts.append((keep, rev[fwd | rev]))
    rows = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, dtype=P.PACKET_DTYPE)
    side = np.concatenate([p[1] for p in parts]).astype(np.int8) if parts else np.zeros(0, np.int8)
    flags = rows["flags"].astype(np.int64)
    seq_raw = rows["seq"].astype(np.int64)
    ack_raw = rows["ack"].astype(np.int64)
    base = [0, 0]
    for s in (0, 1):
        mine = side == s
        syn = mine & ((flags & P.SYN) != 0)
        if syn.any():
            base[s] = int(seq_raw[np.flatnonzero(syn)[0]])
        elif mine.any():  # no SYN captured: count from the side's first sequence number, minus one
            base[s] = int(seq_raw[np.flatnonzero(mine)[0]]) - 1
    own_base = np.where(side == 0, base[0], base[1])
    peer_base = np.where(side == 0, base[1], base[0])
    seq = seq_diff_array(own_base, seq_raw)
    ack = seq_diff_array(peer_base, ack_raw).astype(float)
    ack[(flags & P.ACK) == 0] = np.nan
    t0 = float(rows["ts_ns"][0]) / 1e9 if len(rows) else float(conn["start"])
    return ConnectionPackets(
        frame=rows["frame"].astype(np.int64),
        time=(rows["ts_ns"].astype(np.int64) - round(t0 * 1e9)) / 1e9,
        side=side,
        flags=flags,
        seq=seq,
        ack=ack,
        payload=rows["payload_len"].astype(np.int64),
        t0=t0,
    )


# ------------------------------------------------------------------------ time-sequence graph


def time_sequence_title(doc: dict, conn: dict) -> str:
    resets = R.resets_by_connection(doc).get((conn.get("capture", 0), conn["id"]), [])
    primary = R.primary_reset(conn, resets)
    stream = R.stream_indices(doc)[(conn.get("capture", 0), conn["id"])]
    head = f"Connection {conn['id']} (tcp.stream {stream})"
    if primary is None:
        sent = R.format_bytes(conn["stream_bytes"]["server"])
        if R.connection_outcome(conn) == R.OUTCOME_CLEAN:
            what = f"closed cleanly with FINs, server sent {sent}"
        else:
            what = f"no FIN and no RST ({conn['history'] or 'no history'})"
    else:
        who, verdict = primary["sender"], primary["verdict"]
        if verdict == "close-race":
            what = f"{who} reset with {R.format_bytes(primary['in_flight'])} in flight (close race)"
        elif verdict == "backlog":
            what = "server reset a handshake it never accepted (listen backlog)"
        elif verdict == "late-data":
            what = f"{who} closed with FIN, then reset the peer's late data"
        elif verdict == "refused":
            what = "connection refused (nothing listened)"
        elif verdict == "abort":
            what = f"{who} aborted with nothing in flight"
        elif verdict == "middlebox":
            what = f"a middlebox reset it, as the {who}"
        elif verdict == "ignored":
            what = "a RST that changed nothing (ignored)"
        elif verdict == "keepalive":
            what = f"{who} reset after unanswered keepalive probes"
        else:
            what = f"{who} reset ({verdict})"
    client = ""
    if conn.get("client_outcome"):
        client = f"\nclient saw {conn['client_outcome']}"
        if conn.get("client_bytes_expected") and conn.get("client_bytes_read") is not None:
            read, expected = conn["client_bytes_read"], conn["client_bytes_expected"]
            client += f", read {R.format_bytes(read)} of {R.format_bytes(expected)}"
    return f"{head}: {what}{client}"


def time_sequence_figure(doc: dict, conn: dict, packets: ConnectionPackets | None = None) -> Figure:
    """tcptrace/Stevens-style time-sequence graph of one connection: one panel per direction."""
    pk = packets if packets is not None else connection_packets(doc, conn)
    key = (conn.get("capture", 0), conn["id"])
    resets = R.resets_by_connection(doc).get(key, [])
    primary = R.primary_reset(conn, resets)
    role = {"client": 0, "server": 1}
    if primary is not None and primary["sender"] in role:
        main = role[primary["sender"]]
    else:
        main = int(conn["stream_bytes"]["server"] >= conn["stream_bytes"]["client"])
    main_bytes = conn["stream_bytes"]["server" if main else "client"]
    other_bytes = conn["stream_bytes"]["client" if main else "server"]
    ratios = (3, 1) if main_bytes > 8 * max(other_bytes, 1) else (1, 1)
    with rc_context(STYLE):
        fig = Figure(figsize=(11.5, 7.5), layout="constrained")
        axes = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": ratios})
        for ax, side in zip(axes, (main, 1 - main), strict=True):
            _draw_direction(ax, pk, side, resets, main=main)
        label = "SYN" if conn["history"][:1].upper() == "S" else "first packet"
        axes[1].set_xlabel(f"time since the connection's {label} (s)")
        axes[0].set_title(time_sequence_title(doc, conn), loc="left")
        if not len(pk):
            axes[0].text(0.5, 0.5, "no packets of this connection found in the capture", ha="center",
                         transform=axes[0].transAxes)  # fmt: skip
    return fig


def _draw_direction(ax, pk: ConnectionPackets, side: int, resets: list[dict], *, main: int) -> None:
    names = ("client", "server")
    me, peer = names[side], names[1 - side]
    ax.set_ylabel(f"{me} → {peer}\nrelative sequence number (bytes)")
    _bytes_axis(ax)
    ax.yaxis.set_major_locator(MaxNLocator(nbins=7, integer=True))
    mine = pk.side == side
    t, seq, plen, flags = pk.time[mine], pk.seq[mine], pk.payload[mine], pk.flags[mine]
    rst = (flags & P.RST) != 0
    handles = []

    # Data segments: a vertical bar from seq to seq+len; retransmissions (not beyond the highest end so far) red.
    data = (plen > 0) & ~rst
    if data.any():
        ends = seq + plen
        prior = np.concatenate(([-np.inf], np.maximum.accumulate(np.where(data, ends, -np.inf))[:-1]))
        retx = data & (ends <= prior)
        for mask, colour, name in ((data & ~retx, DATA, f"{me} data segment"),
                                   (retx, RETRANSMITTED, "retransmitted segment")):  # fmt: skip
            if mask.any():
                segs = np.stack([np.column_stack([t[mask], seq[mask]]), np.column_stack([t[mask], ends[mask]])], 1)
                ax.add_collection(LineCollection(segs, colors=colour, linewidths=1.8, zorder=3))
                ax.scatter(t[mask], ends[mask], marker="_", s=30, c=colour, zorder=3, linewidths=1.2)
                handles.append(Line2D([], [], color=colour, lw=2, marker="_", label=f"{name} ({int(mask.sum())})"))
    # snd_nxt: the highest sequence number sent so far (SYN and FIN count one).
    sent = ~rst
    if sent.any():
        consumed = plen + ((flags & P.SYN) != 0) + ((flags & P.FIN) != 0)
        nxt = np.maximum.accumulate(seq[sent] + consumed[sent])
        ax.step(t[sent], nxt, where="post", color=SND_NXT, lw=1.0, ls="--", zorder=2)
        handles.append(Line2D([], [], color=SND_NXT, lw=1, ls="--", label=f"{me} snd_nxt (highest sent)"))
    # The peer's acknowledgments of this direction.
    theirs = (pk.side != side) & ~np.isnan(pk.ack) & ((pk.flags & P.RST) == 0)
    if theirs.any():
        ax.step(pk.time[theirs], pk.ack[theirs], where="post", color=ACK_LINE, lw=1.4, zorder=2)
        handles.append(Line2D([], [], color=ACK_LINE, lw=1.4, label=f"{peer} ACK (bytes received)"))
    # SYN / SYN-ACK and FIN.
    syn = (flags & P.SYN) != 0
    if syn.any():
        ax.scatter(t[syn], seq[syn], marker="o", s=40, facecolors="white", edgecolors="black", zorder=4)
        n_syn = int(syn.sum())
        word = "SYN-ACK" if side else "SYN"
        handles.append(Line2D([], [], marker="o", ls="", mfc="white", mec="black",
                              label=f"{word} ({n_syn}{', retransmitted' if n_syn > 1 else ''})"))  # fmt: skip
    fin = ((flags & P.FIN) != 0) & ~rst
    if fin.any():
        ax.scatter(t[fin], seq[fin] + plen[fin], marker=">", s=70, c="#222222", zorder=5)
        for x, yv in zip(t[fin], seq[fin] + plen[fin], strict=True):
            ax.annotate("FIN", (x, yv), xytext=(6, 4), textcoords="offset points", fontsize=10, weight="bold")
        handles.append(Line2D([], [], marker=">", ls="", color="#222222", label="FIN"))

    # RSTs of this side, from the document; echoes grouped under one label.
    frame_pos = {int(f): i for i, f in enumerate(pk.frame)}
    mine_resets = [r for r in resets if r["sender"] == me and int(r["frame"]) in frame_pos]
    echoes = [r for r in mine_resets if r["verdict"] == Verdict.ECHO.value]
    for r in mine_resets:
        if r["verdict"] == Verdict.ECHO.value:
            continue
        i = frame_pos[int(r["frame"])]
        x, yv = pk.time[i], pk.seq[i]
        colour = _colour(r["verdict"])
        ax.scatter([x], [yv], marker="X", s=160, c=colour, edgecolors="black", linewidths=0.8, zorder=6)
        ax.annotate(f"RST frame {r['frame']}\n{r['verdict']}", (x, yv), xytext=(8, -4), textcoords="offset points",
                    fontsize=10, weight="bold", color=colour, va="top")  # fmt: skip
        handles.append(Line2D([], [], marker="X", ls="", color=colour, mec="black", ms=10,
                              label=f"RST ({r['verdict']})"))  # fmt: skip
        _shade_in_flight(ax, pk, side, r, x, yv, handles)
    if echoes:
        idx = [frame_pos[int(r["frame"])] for r in echoes]
        ex, ey = pk.time[idx], pk.seq[idx]
        ax.scatter(ex, ey, marker="x", s=28, c=ECHO_GREY, zorder=5, linewidths=1.0)
        primaries = sorted({r["primary"] for r in echoes if r.get("primary") is not None})
        of = f" of frame {primaries[0]}" if len(primaries) == 1 else ""
        handles.append(Line2D([], [], marker="x", ls="", color=ECHO_GREY, label=f"{len(echoes)} echo RSTs{of}"))
        ymin, ymax = float(ey.min()), float(ey.max())
        ax.annotate(f"{len(echoes)} echo RSTs{of}\n(replies to {peer} segments\nthat arrived after the reset)",
                    (float(ex.max()), (ymin + ymax) / 2), xytext=(10, 0), textcoords="offset points", va="center",
                    fontsize=9.5, color="#444444")  # fmt: skip
        if len(echoes) > 1:
            ax.plot([ex.max() + 0.004 * max(pk.time.max(), 1e-3)] * 2, [ymin, ymax], color=ECHO_GREY, lw=1)
    ax.autoscale_view()
    ax.margins(x=0.12, y=0.08)
    if not mine.any():
        ax.text(0.5, 0.5, f"no {me} packets", ha="center", va="center", transform=ax.transAxes, color="#666")
    ax.legend(handles=handles, loc="best", fontsize=9, framealpha=0.85)


def _shade_in_flight(ax, pk: ConnectionPackets, side: int, r: dict, x: float, y_rst: float, handles: list) -> None:
    """Shade the bytes the RST's sender had in flight: from ``y_rst - in_flight`` to the RST's seq."""
    n = r.get("in_flight") or 0
    if n <= 0:
        return
    low = y_rst - n
    mine = (pk.side == side) & (pk.payload > 0)
    covering = mine & (pk.seq + pk.payload > low) & (pk.time <= x)
    x0 = float(pk.time[covering].min()) if covering.any() else x - 0.05 * max(float(pk.time.max()), 1e-3)
    x0 = min(x0, x - 1e-6)
    colour = _colour(r["verdict"])
    ax.add_patch(Rectangle((x0, low), x - x0, n, facecolor=colour, alpha=0.18, edgecolor=colour, lw=1.0, zorder=1))
    basis = {"echoes": "lower bound, from echo RSTs", "capture": "at the capture point"}.get(
        r.get("in_flight_basis") or "", r.get("in_flight_basis") or ""
    )
    text = f"{R.format_bytes(n)} in flight at the RST"
    if basis:
        text += f"\n({basis})"
    ax.text(
        x0 + (x - x0) / 2,
        low + n / 2,
        text,
        ha="center",
        va="center",
        fontsize=10.5,
        weight="bold",
        color=colour,
        zorder=7,
        bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": colour, "alpha": 0.9},
    )
    handles.append(Patch(facecolor=colour, alpha=0.3, label=f"in flight at the RST: {R.format_bytes(n)}"))


# ----------------------------------------------------------------------------------- listen queue


def handshake_times(doc: dict) -> dict[tuple[int, int], dict[str, list[float]]]:
    """(capture, connection id) -> {"syn": [...], "synack": [...]}: epoch seconds of its SYN and SYN-ACK
    segments, read from the captures (only segments with the SYN flag)."""
    from rstscope.reader import open_capture

    out: dict[tuple[int, int], dict[str, list[float]]] = {}
    index: dict[tuple[int, tuple[str, str]], list[dict]] = {}
    for c in doc["connections"]:
        index.setdefault((c.get("capture", 0), (c["client"], c["server"])), []).append(c)
    for cap_row in doc["captures"]:
        cap_i = cap_row.get("index", 0)
        with open_capture(cap_row["path"]) as cap:
            for table in cap.chunks():
                t = table[((table["flags"] & P.SYN) != 0) & (table["decode_error"] == 0)]
                for row in t:
                    src = P.format_endpoint(row["src_hi"], row["src_lo"], row["src_port"])
                    dst = P.format_endpoint(row["dst_hi"], row["dst_lo"], row["dst_port"])
                    is_synack = bool(row["flags"] & P.ACK)
                    pair = (dst, src) if is_synack else (src, dst)
                    frame = int(row["frame"])
                    for c in index.get((cap_i, pair), []):
                        if c["first_frame"] <= frame <= c["last_frame"]:
                            times = out.setdefault((cap_i, c["id"]), {"syn": [], "synack": []})
                            times["synack" if is_synack else "syn"].append(int(row["ts_ns"]) / 1e9)
                            break
    return out


def listen_queue_title(doc: dict, label: str | None = None) -> str:
    lq = doc.get("listen_queue") or {}
    attempts = sum(1 for c in doc["connections"] if c["history"][:1] == "S")
    parts = []
    if lq.get("syn_retransmitted"):
        parts.append(f"{lq['syn_retransmitted']} of {attempts} SYNs retransmitted")
    if lq.get("synack_after_ack"):
        parts.append(f"{lq['synack_after_ack']} SYN-ACKs resent after the client's ACK")
    if lq.get("unanswered"):
        parts.append(f"{lq['unanswered']} never answered")
    backlog = (doc["summary"].get("by_verdict") or {}).get("backlog")
    if backlog:
        parts.append(f"{backlog} backlog resets")
    counters = R.kernel_counters(doc, names=("TcpExtListenOverflows",))
    if counters:
        parts.append(f"ListenOverflows +{counters['TcpExtListenOverflows']}")
    prefix = f"{label}: " if label else ""
    if not parts:
        return f"{prefix}listen queue: all {attempts} handshakes answered at the first SYN"
    return f"{prefix}listen queue: " + ", ".join(parts)


def listen_queue_figure(doc: dict, *, label: str | None = None,
                        handshakes: dict[tuple[int, int], dict[str, list[float]]] | None = None) -> Figure:  # fmt: skip
    """SYNs and their retransmissions along time, the SYN→SYN-ACK delay per connection, and the
    server's listen-queue counters when the document has them (lab runs)."""
    hs = handshakes if handshakes is not None else handshake_times(doc)
    t0 = R.first_syn_time(doc)
    conns = [c for c in doc["connections"] if hs.get((c.get("capture", 0), c["id"]), {}).get("syn")]
    with rc_context(STYLE):
        fig = Figure(figsize=(11.5, 7.5), layout="constrained")
        grid = fig.add_gridspec(2, 2, height_ratios=(1, 2), width_ratios=(4, 1.25))
        ax_rate = fig.add_subplot(grid[0, 0])
        ax_delay = fig.add_subplot(grid[1, 0], sharex=ax_rate)
        ax_text = fig.add_subplot(grid[:, 1])
        ax_text.axis("off")
        first, retx, synack_retx = [], [], []
        for c in conns:
            times = hs[(c.get("capture", 0), c["id"])]
            syns = sorted(times["syn"])
            first.append(syns[0] - t0)
            retx.extend(s - t0 for s in syns[1:])
            synack_retx.extend(s - t0 for s in sorted(times["synack"])[1:])
        span = max([*first, *retx, *synack_retx, 1e-3])
        bins = np.linspace(0, span * 1.001, min(60, max(10, len(first) // 2)) + 1)
        width = bins[1] - bins[0]
        for values, colour, name in ((first, "#1f77b4", "first SYN"), (retx, "#ff7f0e", "SYN retransmitted"),
                                     (synack_retx, "#d62728", "SYN-ACK retransmitted")):  # fmt: skip
            if values:
                counts, _ = np.histogram(values, bins)
                ax_rate.stairs(counts, bins, color=colour, lw=1.8, fill=name == "first SYN",
                               alpha=0.35 if name == "first SYN" else 1.0, label=f"{name} ({len(values)})")  # fmt: skip
        ax_rate.set_ylabel(f"segments per {width * 1000:.0f} ms" if width < 1 else f"segments per {width:.1f} s")
        ax_rate.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax_rate.legend(loc="upper right", fontsize=9)
        ax_rate.set_title(listen_queue_title(doc, label), loc="left")
        ax_rate.tick_params(labelbottom=False)

        _draw_handshake_rows(ax_delay, doc, conns, hs, t0)
        ax_delay.set_xlim(-0.02 * span, span * 1.04)
        ax_text.text(0.0, 1.0, _counter_text(doc, conns, hs), va="top", ha="left", fontsize=10, family="monospace",
                     transform=ax_text.transAxes)  # fmt: skip
    return fig


def _draw_handshake_rows(ax, doc: dict, conns: list[dict], hs: dict, t0: float) -> None:
    """One row per connection: its wait from the first SYN to the first SYN-ACK, and every SYN,
    SYN-ACK and handshake RST on the way."""
    ax.set_xlabel("time since first SYN (s)")
    n = len(conns)
    if not n:
        ax.text(0.5, 0.5, "no SYN in the capture", ha="center", va="center", transform=ax.transAxes)
        return
    conns = sorted(conns, key=lambda c: min(hs[(c.get("capture", 0), c["id"])]["syn"]))
    row_pt = 4.6 * 72 / n
    width = float(np.clip(row_pt * 0.35, 0.8, 5.0))
    mark = float(np.clip(row_pt * 0.8, 2.5, 8.0)) ** 2
    points: dict[str, tuple[list, list]] = {k: ([], []) for k in ("syn", "syn_retx", "synack", "synack_retx", "rst")}
    by_conn = R.resets_by_connection(doc)
    for y, c in enumerate(conns):
        key = (c.get("capture", 0), c["id"])
        syns = sorted(hs[key]["syn"])
        synacks = sorted(hs[key]["synack"])
        start = syns[0] - t0
        if synacks:
            ax.hlines(y, start, synacks[0] - t0, colors=_colour(R.connection_outcome(c)), linewidth=width, zorder=2)
        else:
            ax.hlines(y, start, syns[-1] - t0, colors="#444444", linewidth=width * 0.6, linestyles=":", zorder=2)
        for name, values in (("syn", syns[:1]), ("syn_retx", syns[1:]), ("synack", synacks[:1]),
                             ("synack_retx", synacks[1:])):  # fmt: skip
            points[name][0].extend(v - t0 for v in values)
            points[name][1].extend([y] * len(values))
        for r in by_conn.get(key, []):
            if r["verdict"] in ("backlog", "refused"):
                points["rst"][0].append(r["time"] - t0)
                points["rst"][1].append(y)
    styles = {
        "syn": dict(marker="o", facecolors="white", edgecolors="black", label="first SYN"),
        "syn_retx": dict(marker="^", c="#ff7f0e", edgecolors="black", label="SYN retransmitted"),
        "synack": dict(marker="s", c="#2ca02c", edgecolors="black", label="first SYN-ACK"),
        "synack_retx": dict(marker="s", c="#d62728", edgecolors="black", label="SYN-ACK retransmitted"),
        "rst": dict(marker="X", c=_colour("backlog"), edgecolors="black", label="backlog / refused RST"),
    }
    handles = []
    for name, (xs, ys) in points.items():
        if xs:
            style = dict(styles[name])
            label = style.pop("label")
            ax.scatter(xs, ys, s=mark, linewidths=0.5, zorder=4, **style)
            handles.append(Line2D([], [], ls="", ms=8, mec="black", marker=style["marker"],
                                  mfc=style.get("c", "white"), label=f"{label} ({len(xs)})"))  # fmt: skip
    outcomes = Counter(R.connection_outcome(c) for c in conns)
    handles += [Patch(color=_colour(o), label=f"waiting for SYN-ACK: {o}") for o in R.OUTCOME_ORDER if outcomes[o]]
    unanswered = sum(1 for c in conns if not hs[(c.get("capture", 0), c["id"])]["synack"])
    if unanswered:
        handles.append(Line2D([], [], color="#444444", ls=":", lw=2, label=f"never answered ({unanswered})"))
    ax.set_ylim(n - 0.5, -0.5)
    ax.grid(axis="y", visible=False)
    step = max(1, math.ceil(n / 20))
    ax.set_yticks(range(0, n, step), [f"#{conns[i]['id']}" for i in range(0, n, step)])
    ax.set_ylabel(f"{n} handshakes, by first SYN")
    ax.legend(handles=handles, loc="lower left", bbox_to_anchor=(1.02, 0.0), borderaxespad=0.0, fontsize=9,
              frameon=False)  # fmt: skip


def _counter_text(doc: dict, conns: list[dict], hs: dict) -> str:
    lq = doc.get("listen_queue") or {}
    lines = ["From the capture", ""]
    delays = [min(hs[(c.get("capture", 0), c["id"])]["synack"]) - min(hs[(c.get("capture", 0), c["id"])]["syn"])
              for c in conns if hs[(c.get("capture", 0), c["id"])]["synack"]]  # fmt: skip
    if delays:
        lines.append(f"{'SYN→SYN-ACK median':<19}{_duration(float(np.median(delays))):>8}")
        lines.append(f"{'SYN→SYN-ACK max':<19}{_duration(max(delays)):>8}")
    for key, name in (("syn_retransmitted", "SYN retransmitted"), ("synack_retransmitted", "SYN-ACK retransmitted"),
                      ("synack_after_ack", "SYN-ACK after ACK"), ("unanswered", "never answered")):  # fmt: skip
        lines.append(f"{name:<22}{lq.get(key, 0):>5}")
    by_verdict = doc["summary"].get("by_verdict") or {}
    lines.append(f"{'backlog RSTs':<22}{by_verdict.get('backlog', 0):>5}")
    lines.append(f"{'refused RSTs':<22}{by_verdict.get('refused', 0):>5}")
    counters = R.kernel_counters(doc, names=R.LISTEN_COUNTERS)
    lines += ["", "Server kernel counters", "(nstat delta, lab run)", ""]
    if counters is None:
        lines.append("not known: a capture only")
    elif not counters:
        lines.append("all listen-queue counters 0")
    else:
        for name in R.LISTEN_COUNTERS:
            if name in counters:
                lines.append(f"{name.removeprefix('TcpExt'):<22}{counters[name]:>5}")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


# ----------------------------------------------------------------------------------- comparison


def _short_title(doc: dict, label: str) -> str:
    s = doc["summary"]
    return (f"{label}: {R.plural(s['connections'], 'connection')}, {s['connections_lost_data']} lost data, "
            f"{R.plural(s['resets'], 'RST')}")  # fmt: skip


def comparison_title(a: dict, b: dict, label_a: str, label_b: str) -> str:
    def part(doc: dict, label: str) -> str:
        conns = doc["connections"]
        if any("client_outcome" in c for c in conns):
            gt = doc.get("ground_truth") or {}
            outcomes = gt.get("client_outcomes") or {}
            total = gt.get("client_attempts") or len(conns)
            n = sum(v for o, v in outcomes.items() if str(o).startswith("ECONNRESET"))
            return f"{label} {n}/{total} clients ECONNRESET"
        return f"{label} {doc['summary']['connections_lost_data']}/{len(conns)} connections lost data"

    return f"{part(a, label_a)}  vs  {part(b, label_b)}"


def comparison_figure(a: dict, b: dict, label_a: str = "A", label_b: str = "B") -> Figure:
    """Two runs side by side: their overviews on one time scale, RSTs by verdict, client outcomes."""
    docs, labels = (a, b), (label_a, label_b)
    n = max(len(a["connections"]), len(b["connections"]), 1)
    top_h = min(9.0, 1.8 + 0.16 * n)
    with rc_context(STYLE):
        fig = Figure(figsize=(13, top_h + 4.2), layout="constrained")
        grid = fig.add_gridspec(2, 2, height_ratios=(top_h, 3.6))
        spans = [max((c["end"] - R.first_syn_time(d) for c in d["connections"]), default=0.0) for d in docs]
        for col, (doc, label) in enumerate(zip(docs, labels, strict=True)):
            ax = fig.add_subplot(grid[0, col])
            _draw_overview(ax, doc, plot_height_in=top_h - 1.2, legend=False, compact=True)
            ax.set_xlim(-0.02 * max([*spans, 0.001]), max([*spans, 0.001]) * 1.02)
            ax.set_title(_short_title(doc, label), loc="left", fontsize=11.5)
        fig.suptitle(comparison_title(a, b, label_a, label_b), fontsize=14, weight="bold")
        ax_v = fig.add_subplot(grid[1, 0])
        _grouped_bars(ax_v, [d["summary"].get("by_verdict") or {} for d in docs], labels,
                      order=[v.value for v in Verdict], xlabel="RSTs", title="RSTs by verdict")  # fmt: skip
        ax_o = fig.add_subplot(grid[1, 1])
        if all((d.get("ground_truth") or {}).get("client_outcomes") for d in docs):
            counts = [d["ground_truth"]["client_outcomes"] for d in docs]
            _grouped_bars(ax_o, counts, labels, order=None, xlabel="client attempts",
                          title="What the clients saw (clients.jsonl)")  # fmt: skip
        else:
            counts = [Counter(R.connection_outcome(c) for c in d["connections"]) for d in docs]
            _grouped_bars(ax_o, counts, labels, order=list(R.OUTCOME_ORDER), xlabel="connections",
                          title="Connections by outcome")  # fmt: skip
        handles = [Patch(color=_colour(o), label=o) for o in R.OUTCOME_ORDER
                   if any(R.connection_outcome(c) == o for d in docs for c in d["connections"])]  # fmt: skip
        handles += [
            Line2D([], [], marker="X", ls="", color="#666", mec="black", ms=8, label="RST (primary)"),
            Line2D([], [], marker=".", ls="", color=ECHO_GREY, ms=7, label="echo RST"),
            Line2D([], [], marker="o", ls="", mfc="none", mec="black", ms=8, label="client ECONNRESET"),
        ]
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 7), frameon=False)
    return fig


def _grouped_bars(ax, counts: list[dict], labels: tuple[str, str], *, order: list[str] | None, xlabel: str,
                  title: str) -> None:  # fmt: skip
    keys = [k for k in (order or []) if any(c.get(k) for c in counts)]
    keys += sorted({k for c in counts for k in c if c.get(k) and k not in keys})
    ax.set_title(title, loc="left", fontsize=11.5)
    ax.set_xlabel(xlabel)
    ax.grid(axis="y", visible=False)
    if not keys:
        ax.text(0.5, 0.5, "none in either run", ha="center", va="center", transform=ax.transAxes)
        ax.set_yticks([])
        return
    y = np.arange(len(keys))
    height = 0.38
    for i, (c, label, hatch) in enumerate(zip(counts, labels, ("", "//"), strict=True)):
        values = [c.get(k, 0) for k in keys]
        colours = [_colour(k) if k in OUTCOME_COLOURS else "#4c72b0" for k in keys]
        bars = ax.barh(y + (i - 0.5) * height, values, height=height * 0.95, color=colours, hatch=hatch,
                       edgecolor="black", linewidth=0.6, alpha=1.0 if i == 0 else 0.6)  # fmt: skip
        ax.bar_label(bars, labels=[f"{label}: {v}" for v in values], padding=3, fontsize=9)
    ax.set_yticks(y, keys)
    ax.invert_yaxis()
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(0, max(max(c.get(k, 0) for c in counts for k in keys), 1) * 1.45)


# --------------------------------------------------------------------------------------- all figures


def draw_all(doc: dict, out_dir: str | os.PathLike, *, label: str | None = None, connections: list[dict] | None = None,
             examples: int = 3, formats: tuple[str, ...] = ("png", "svg"), prefix: str = "") -> list[Path]:  # fmt: skip
    """Overview, listen queue (when there is anything to see or the run has counters) and one
    time-sequence graph per chosen connection (default: :func:`records.example_connections`)."""
    written: list[Path] = []
    chosen = connections if connections else R.example_connections(doc, examples)
    if not connections:
        written += save(overview_figure(doc, label=label), out_dir, f"{prefix}overview", formats)
        if R.listen_queue_trouble(doc) or R.kernel_counters(doc) is not None:
            written += save(listen_queue_figure(doc, label=label), out_dir, f"{prefix}listen-queue", formats)
    for conn in chosen:
        fig = time_sequence_figure(doc, conn)
        written += save(fig, out_dir, f"{prefix}connection-{conn['id']}", formats)
    return written
