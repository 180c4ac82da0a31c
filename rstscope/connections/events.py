"""The event pass: the rows that change something a person cares about, one at a time, in capture order.

:mod:`rstscope.connections.sequence` picks the event rows and computes their running values; here each
one writes the connection's history (:func:`~rstscope.connections.state.write_history`), records what
the evidence needs (SYN and SYN-ACK frames, the handshake ACK, FINs, segments after a RST, keepalive
probes) and every RST as an :class:`~rstscope.connections.records.RstObservation`, and runs the state
table.
"""

from __future__ import annotations

import numpy as np

from rstscope import packets as P
from rstscope.connections import retire
from rstscope.connections.records import Connection, EndpointState, Finding, RstObservation, SegmentAfterReset, Side
from rstscope.connections.sequence import ConnArrays, answered_segment, answers
from rstscope.connections.state import (
    PEER_EFFECTS,
    PEER_RULES,
    SIDES,
    TRANSITIONS,
    event_of,
    scaled_letter,
    set_state,
    write_history,
)
from rstscope.grouped import NONE

_PEER_EFFECT_PAIRS = frozenset((old, event) for old, event, _peer, _prev in PEER_EFFECTS)
"""The (sender state, event) pairs that can change the peer's state: the others skip two lookups."""
RECENT_SEGMENTS = 16
AFTER_RESET_KEPT = 16
"""Segments kept after a connection's first RST: whether the supposed sender went on sending and the
receiver went on with the connection tells a forged or ignored RST from a real one."""
PROBES_KEPT = 16
"""Keepalive probes kept per side (the last ones)."""


class EventPass:
    """Runs event rows against the live connections (by id) and the carried per-slot arrays."""

    def __init__(self, connections: list[Connection | None], arrays: ConnArrays) -> None:
        self.connections = connections
        self._arrays = arrays
        self.saw_reset = np.zeros(1024, dtype=bool)
        """By connection id: it saw a RST (one byte per connection, not a set entry of about 60)."""
        self._rst_state: dict[int, tuple] = {}  # RST frame -> what the event pass needs about that RST
        self.rst_peer_acks: dict[int, tuple[tuple[int, int], ...]] = {}
        """RST frame -> the peer's last ACK segments before it (set by the tracker for each chunk)."""

    def run(self, idx, frame_col, ts, seq_raw, ack_raw, order, conn, conn_id, side, flags, plen, seq_val,
            ack_val, snd_nxt_before, peer_acked, own_ack_before, peer_snd_nxt, retx_count, zw_count, pure_ack,
            peer_prev, after_gap, *, rows, ttl, gap, probe, last_plain_of, ip_ids):  # fmt: skip
        """Run the event rows ``idx`` (positions in the grouped chunk) through :meth:`event` in capture
        order; the other arguments are the chunk's columns and running values, grouped by connection."""
        if not len(idx):
            return
        idx = idx[np.argsort(order[idx], kind="stable")]  # back to capture order
        # What only a RST needs, for the RST rows: sequence state and the peer segment it follows
        # (from this chunk, else the carried last segment of the peer).
        rst = idx[(flags[idx] & P.RST) != 0]
        if len(rst):
            arr = self._arrays
            pp = peer_prev[rst]
            have_pp = pp >= 0
            ppi = np.maximum(pp, 0)
            c_rst = conn[rst]
            peer_side = 1 - side[rst]

            def carried(name):
                return np.where(peer_side == 0, arr[f"{name}0"][c_rst], arr[f"{name}1"][c_rst])

            def carried_own(name):
                return np.where(peer_side == 1, arr[f"{name}0"][c_rst], arr[f"{name}1"][c_rst])

            rst_rows = rows[order[rst]]
            own_plain = np.where(side[rst] == 0, last_plain_of[0][rst], last_plain_of[1][rst])
            extra = zip(
                snd_nxt_before[rst].tolist(), peer_acked[rst].tolist(), own_ack_before[rst].tolist(),
                peer_snd_nxt[rst].tolist(),
                np.where(have_pp, frame_col[ppi], carried("last_frame")).tolist(),
                np.where(have_pp, flags[ppi], carried("last_flags")).tolist(),
                np.where(have_pp, plen[ppi], carried("last_len")).tolist(),
                np.where(have_pp, ack_val[ppi], carried("last_ackrel")).tolist(),
                np.where(have_pp, seq_val[ppi], carried("last_seqrel")).tolist(),
                np.where(have_pp, ts[ppi], carried("last_ns")).tolist(),
                np.where(have_pp, gap[ppi], carried("last_gap")).tolist(),
                rst_rows["tcp_auth"].tolist(), rst_rows["window"].tolist(),
                np.where(own_plain >= 0, frame_col[np.maximum(own_plain, 0)], carried_own("last_plain_frame")).tolist(),
                rst_rows["has_ts"].tolist(),
                np.where(own_plain >= 0, ip_ids[np.maximum(own_plain, 0)], carried_own("last_plain_ip_id")).tolist(),
                strict=True,
            )  # fmt: skip
            self._rst_state = dict(zip(frame_col[rst].tolist(), extra, strict=True))
        columns = zip(
            frame_col[idx].tolist(), ts[idx].tolist(), conn_id[idx].tolist(), side[idx].tolist(),
            flags[idx].tolist(), plen[idx].tolist(), seq_val[idx].tolist(), ack_val[idx].tolist(),
            seq_raw[idx].tolist(), ack_raw[idx].tolist(), retx_count[idx].tolist(), zw_count[idx].tolist(),
            pure_ack[idx].tolist(), after_gap[idx].tolist(), ttl[idx].tolist(), ip_ids[idx].tolist(),
            probe[idx].tolist(),
            strict=True,
        )  # fmt: skip
        connections = self.connections
        for row in columns:
            self.event(connections[row[2]], row)

    def event(self, c: Connection, row) -> None:
        """One event row: history letters, what the connection records, the state table."""
        (frame, ts, _cid, s, flags, plen, seq, ack, seq_raw, ack_raw, retx_count, zw_count, is_pure_ack,
         after_gap, ttl, ip_id, is_probe) = row  # fmt: skip
        side = SIDES[s]
        recent = c._recent
        if after_gap or ((recent[0] or recent[1]) and retire.is_stale(recent, frame)):
            recent[0].clear()  # the recent segments no longer are the last ones
            recent[1].clear()
        syn, fin, rst, ackf = flags & P.SYN, flags & P.FIN, flags & P.RST, flags & P.ACK
        old, peer = c.state[s], c.state[1 - s]
        write_history(c, side, flags, plen, seq_raw, is_pure_ack)
        # Log-scale letters, in Zeek's order (window before retransmission).  ``*_count`` is the side's
        # running count at this row (0: not one); the occurrences Zeek ignores are taken off first.
        if zw_count:
            zw_ignored = rst or old is EndpointState.RESET or peer is EndpointState.CLOSED
            scaled_letter(c, side, "w", zw_count, ignored=zw_ignored)
        if retx_count:
            scaled_letter(c, side, "t", retx_count, ignored=old is EndpointState.RESET)

        if syn and not ackf:
            if side is Side.ORIG:
                c.syn_frames.append(frame)
                if c.isn[0] is None:
                    c.isn[0] = seq_raw
        elif syn and side is Side.RESP:
            if c.synack_frames and c.handshake_ack_frame is not None:
                c.synack_after_ack_frames.append(frame)
            c.synack_frames.append(frame)
            if c.isn[1] is None:
                c.isn[1] = seq_raw
        if plen and c.first_payload_frame[s] is None:
            c.first_payload_frame[s] = frame
        if (
            side is Side.ORIG
            and ackf
            and c.handshake_ack_frame is None
            and c.synack_frames
            and not syn
            and ack != NONE
            and ack >= 1
        ):
            c.handshake_ack_frame = frame
        if fin and c.fin_frame[s] is None:
            c.fin_frame[s] = frame
        if (c.rst_frames[0] or c.rst_frames[1]) and len(c.after_reset) < AFTER_RESET_KEPT:
            segment_ack = _none(ack) if ackf else None
            c.after_reset.append(SegmentAfterReset(frame, ts, side, flags, seq, segment_ack, plen, ttl, ip_id))
        if is_probe:
            probes = c.keepalive_probes[s]
            probes.append((frame, ts))
            del probes[:-PROBES_KEPT]
        if rst:
            (snd_nxt, peer_acked, own_acked, peer_nxt, ans_frame, ans_flags, ans_len, ans_ack,
             ans_seq, peer_last_ns, answered_idle, tcp_auth, window,
             last_plain_frame, has_ts, prev_ip_id) = self._rst_state.pop(frame)  # fmt: skip
            # A bare RST is a reply (its seq is the answered segment's ack).  A RST|ACK is a reply when its
            # numbers say so: to a SYN (Linux, no socket), or seq = the segment's ack and ack = its end, as
            # BSD, Windows and middleboxes answer; an active RST|ACK whose peer had nothing unacknowledged
            # looks the same, and the evidence keeps both readings (see evidence.py).
            answered = answered_segment(c._recent[1 - s], flags, seq_raw, ack_raw)
            if (
                answered is None
                and ans_frame >= 0
                and answers(flags, seq, ack, ans_flags, ans_seq, ans_ack, ans_len)  # relative numbers
            ):
                answered = (ans_frame, ans_flags, None, None, ans_len, ans_seq, ans_ack)
            wire = {
                "ttl": ttl, "ip_id": ip_id, "tcp_auth": tcp_auth, "window": window, "payload": plen,
                "has_ts": has_ts, "prev_ip_id": None if prev_ip_id < 0 else prev_ip_id,
                "peer_last_ns": None if ans_frame < 0 else peer_last_ns,
                "answered_idle_ns": None if ans_frame < 0 else answered_idle,
                "keepalive_probes": tuple(p for p in c.keepalive_probes[s] if p[0] > last_plain_frame),
            }  # fmt: skip
            self._record_reset(c, side, frame, ts, flags, seq, ack, seq_raw, snd_nxt, peer_acked, own_acked,
                               peer_nxt, answered, wire)  # fmt: skip
            c.rst_frames[s].append(frame)
        recent = c._recent[s]
        recent.append((frame, flags, seq_raw, ack_raw, plen, seq, ack))
        if len(recent) > RECENT_SEGMENTS:
            del recent[0]

        event = event_of(side, flags, plen)
        pair = (old, event)
        new = PEER_RULES.get((old, event, peer)) or TRANSITIONS.get(pair)
        if new is None:
            c.findings.append(
                Finding(
                    kind=f"state.{event.value}_after_{old.value}",
                    frame=frame,
                    side=side,
                    detail=f"{side.role} sent {event.value} while {old.value}",
                )
            )
            return
        if new is not old:
            set_state(c, s, new)
        if pair in _PEER_EFFECT_PAIRS:
            peer_new = PEER_EFFECTS.get((old, event, peer, c.prev_state[1 - s])) or PEER_EFFECTS.get(
                (old, event, peer, None)
            )
            if peer_new is not None:
                set_state(c, 1 - s, peer_new)

    def _record_reset(self, c, side, frame, ts, flags, seq, ack, seq_raw, snd_nxt, peer_acked, own_acked,
                      peer_nxt, answered, wire: dict) -> None:  # fmt: skip
        s = int(side)
        ans_frame, ans_flags, _, _, ans_len, ans_seq, ans_ack = answered or (None,) * 7
        obs = RstObservation(
            frame=frame,
            ts_ns=ts,
            side=side,
            flags=flags,
            seq=seq,
            ack=_none(ack) if flags & P.ACK else None,
            seq_raw=seq_raw,
            snd_nxt=_none(snd_nxt),
            peer_acked=_none(peer_acked),
            sender_acked=_none(own_acked),
            peer_snd_nxt=_none(peer_nxt),
            phase=c.phase(),
            sender_state=c.state[s],
            peer_state=c.state[1 - s],
            sender_fin_frame=c.fin_frame[s],
            peer_fin_frame=c.fin_frame[1 - s],
            sender_prior_rst_frame=c.rst_frames[s][0] if c.rst_frames[s] else None,
            sender_first_payload_frame=c.first_payload_frame[s],
            answered_frame=ans_frame,
            answered_flags=ans_flags,
            answered_payload=ans_len,
            answered_ack=_none(ans_ack) if answered and ans_flags & P.ACK else None,
            answered_seq=_none(ans_seq) if answered else None,
            peer_recent_acks=self.rst_peer_acks.pop(frame, ()),
            synacks_before=c.synack_frames.before(frame),
            synacks_after_ack_before=c.synack_after_ack_frames.before(frame),
            **wire,
        )
        c.resets.append(obs)
        if c.id >= len(self.saw_reset):
            self.saw_reset = retire.fit(self.saw_reset, c.id + 1, False)
        self.saw_reset[c.id] = True

    # ----------------------------------------------------------------- the end


def _none(value: int) -> int | None:
    return None if value == NONE else int(value)
