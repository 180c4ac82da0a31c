"""Micro-benchmark for benchmarks/PLAN.md: the tracker's event pass as a compiled loop over event rows.

Demonstrates what one event row costs when the work of ``Tracker._event`` that every row does (the
endpoint state table with Zeek's peer rules, the history letters, the handshake, FIN and RST frames,
and the unexpected-transition findings) runs as one loop over integer columns, instead of one Python
call per row.  The rows are the real ones: ``dump`` runs today's tracker over a capture and saves
the rows its event pass receives (``--dump``).  The same loop runs four ways:

* ``python``: the loop as plain Python over the columns (the price of the algorithm in Python
  without objects; today's ``_event`` is measured by ``profile_stages.py``);
* ``numba``: the same function compiled by numba (``njit(cache=True)``), if numba is installed;
* ``C``: the same loop in C (``C_SOURCE``), compiled with the system's ``cc -O2``, called through ctypes;
* ``numpy-rounds``: no loop per row: round k handles the k-th event row of every connection at once
  (state transitions as table lookups), as many rounds as the longest connection has rows.

All of them must give the same per-connection states, history letters, frames and findings, checked
here before any time is printed.

    python benchmarks/event_kernel.py --dump benchmarks/data/short-1000000pkts-seed9.pcap rows.npz
    python benchmarks/event_kernel.py rows.npz
"""

from __future__ import annotations

import argparse
import inspect
import sys
import time

import numpy as np

from rstscope import connections as C
from rstscope import packets as P
from rstscope.connections.events import EventPass
from rstscope.grouped import NONE as GROUPED_NONE

STATES = list(C.EndpointState)
EVENTS = list(C.Event)
NS, NE = len(STATES), len(EVENTS)
SI = {s: i for i, s in enumerate(STATES)}
EI = {e: i for i, e in enumerate(EVENTS)}
ANY = NS  # PEER_EFFECTS's "any previous state"


def tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """connections.py's three state tables as integer arrays (-1: no entry)."""
    trans = np.full((NS, NE), -1, np.int8)
    for (s, e), new in C.TRANSITIONS.items():
        trans[SI[s], EI[e]] = SI[new]
    peer_rules = np.full((NS, NE, NS), -1, np.int8)
    for (s, e, p), new in C.PEER_RULES.items():
        peer_rules[SI[s], EI[e], SI[p]] = SI[new]
    effects = np.full((NS, NE, NS, NS + 1), -1, np.int8)
    for (s, e, p, pp), new in C.PEER_EFFECTS.items():
        effects[SI[s], EI[e], SI[p], ANY if pp is None else SI[pp]] = SI[new]
    return trans, peer_rules, effects


DUMPED = {
    "frame": "frame_col", "conn": "conn_id", "side": "side", "flags": "flags", "plen": "plen", "seq_raw": "seq_raw",
    "ack": "ack_val", "retx_count": "retx_count", "zw_count": "zw_count", "pure_ack": "pure_ack",
}  # fmt: skip
"""The loop's columns <- the names of ``EventPass.run``'s arguments they come from."""
COLUMNS = tuple(DUMPED)


def dump(capture: str, out: str) -> int:
    """Run today's tracker over ``capture``; save the rows of its event pass, in the order it sees them."""
    from rstscope.analysis import CHUNK_PACKETS
    from rstscope.reader import open_capture

    saved: dict[str, list[np.ndarray]] = {k: [] for k in COLUMNS}
    real = EventPass.run
    signature = inspect.signature(real)

    def spy(self, *args, **kwargs):
        given = signature.bind(self, *args, **kwargs).arguments
        idx, order = given["idx"], given["order"]
        rows = idx[np.argsort(order[idx], kind="stable")]
        for name, column in DUMPED.items():
            saved[name].append(np.asarray(given[column][rows], dtype=np.int64))
        return real(self, *args, **kwargs)

    EventPass.run = spy
    tracker = C.Tracker()
    with open_capture(capture, chunk_packets=CHUNK_PACKETS) as cap:
        for chunk in cap.chunks():
            tracker.feed(chunk)
    EventPass.run = real
    cols = {k: np.concatenate(v) for k, v in saved.items()}
    # What the tracker made of those rows, to check the loop against.
    store = tracker.finish()
    cols["expect_state"] = np.array([[SI[st] for st in c.state] for c in store], np.int8)
    cols["expect_history"] = np.array([c.history_text.lstrip("^") for c in store], f"U{HISTORY_MAX}")
    cols["expect_findings"] = np.array([len(c.findings) for c in store], np.int64)
    np.savez(out, **cols)
    return len(cols["frame"])


# Letters: index into LETTERS; upper case (originator) = code, lower case = code + 16.
LETTERS = "SHADFRTWIQ^"
L_S, L_H, L_A, L_D, L_F, L_R, L_T, L_W, L_I, L_Q = range(10)
HISTORY_MAX = 24
"""Letters kept per connection in this benchmark (a connection with more is cut; none has in these rows)."""
SYN, FIN, RST, ACK = P.SYN, P.FIN, P.RST, P.ACK
E = C.Event
E_SYN, E_SYN_ACK, E_ORIG_SYN_ACK, E_DATA, E_ACK, E_FIN, E_RST = (
    EI[e] for e in (E.SYN, E.SYN_ACK, E.ORIG_SYN_ACK, E.DATA, E.ACK, E.FIN, E.RST)
)
S_RESET, S_CLOSED, S_INACTIVE = SI[C.EndpointState.RESET], SI[C.EndpointState.CLOSED], SI[C.EndpointState.INACTIVE]
NONE = int(GROUPED_NONE)


def new_state(n_conns: int) -> dict[str, np.ndarray]:
    return {
        "state": np.full((n_conns, 2), S_INACTIVE, np.int8),
        "prev_state": np.full((n_conns, 2), S_INACTIVE, np.int8),
        "history": np.zeros((n_conns, HISTORY_MAX), np.int8),
        "history_len": np.zeros(n_conns, np.int16),
        "once": np.zeros(n_conns, np.int16),  # bit per (A, D, I, Q) x side: letters that appear once
        "last_flag_seq": np.full((n_conns, 6), -1, np.int64),
        "uncounted": np.zeros((n_conns, 4), np.int64),  # (T, W) x side
        "syn_frames": np.zeros(n_conns, np.int32),
        "synack_frames": np.zeros(n_conns, np.int32),
        "synack_after_ack": np.zeros(n_conns, np.int32),
        "isn": np.full((n_conns, 2), -1, np.int64),
        "handshake_ack_frame": np.full(n_conns, -1, np.int64),
        "fin_frame": np.full((n_conns, 2), -1, np.int64),
        "first_payload_frame": np.full((n_conns, 2), -1, np.int64),
        "rst_frames": np.zeros((n_conns, 2), np.int32),
        "findings": np.zeros((0, 4), np.int64),
    }


def event_loop(frame, conn, side, flags, plen, seq_raw, ack, retx_count, zw_count, pure_ack,
               trans, peer_rules, effects,
               state, prev_state, history, history_len, once, last_flag_seq, uncounted, syn_frames,
               synack_frames, synack_after_ack, isn, handshake_ack_frame, fin_frame, first_payload_frame,
               rst_frames, findings_out):  # fmt: skip
    """Tracker._event's per-row work over columns; returns the number of findings written."""
    n_findings = 0
    for i in range(len(frame)):
        c, s, f, pl = conn[i], side[i], flags[i], plen[i]
        old, peer = state[c, s], state[c, 1 - s]
        # History (connections._history).
        control = f & (SYN | FIN | RST)
        if control & (control - 1):
            code = L_I if (f & FIN and f & RST) else L_Q
            bit = 1 << ((0 if code == L_I else 1) * 2 + s + 4)
            if not once[c] & bit:
                once[c] |= bit
                if history_len[c] < HISTORY_MAX:
                    history[c, history_len[c]] = code + 16 * s
                    history_len[c] += 1
        elif control:
            if control == SYN:
                kind, code, number = 0, (L_H if f & ACK else L_S), seq_raw[i]
            elif control == FIN:
                kind, code, number = 1, L_F, (seq_raw[i] + pl) % 4294967296
            else:
                kind, code, number = 2, L_R, seq_raw[i]
            key = kind * 2 + s
            if last_flag_seq[c, key] != number and history_len[c] < HISTORY_MAX:
                history[c, history_len[c]] = code + 16 * s
                history_len[c] += 1
            last_flag_seq[c, key] = number
        elif pl or pure_ack[i]:
            code = L_D if pl else L_A
            bit = 1 << ((0 if code == L_A else 1) * 2 + s)
            if not once[c] & bit:
                once[c] |= bit
                if history_len[c] < HISTORY_MAX:
                    history[c, history_len[c]] = code + 16 * s
                    history_len[c] += 1
        # Log-scale letters (connections._scaled_letter): W, then T.
        for letter, count, ignored, slot in (
            (L_W, zw_count[i], (f & RST) != 0 or old == S_RESET or peer == S_CLOSED, 2 + s),
            (L_T, retx_count[i], old == S_RESET, s),
        ):
            if count:
                if ignored:
                    uncounted[c, slot] += 1
                else:
                    k = count - uncounted[c, slot]
                    while k >= 10 and k % 10 == 0:
                        k //= 10
                    if k == 1 and history_len[c] < HISTORY_MAX:
                        history[c, history_len[c]] = letter + 16 * s
                        history_len[c] += 1
        # Handshake, FIN, RST frames.
        syn = f & SYN
        if syn and not f & ACK:
            if s == 0:
                syn_frames[c] += 1
                if isn[c, 0] < 0:
                    isn[c, 0] = seq_raw[i]
        elif syn and s == 1:
            if synack_frames[c] and handshake_ack_frame[c] >= 0:
                synack_after_ack[c] += 1
            synack_frames[c] += 1
            if isn[c, 1] < 0:
                isn[c, 1] = seq_raw[i]
        if pl and first_payload_frame[c, s] < 0:
            first_payload_frame[c, s] = frame[i]
        if s == 0 and f & ACK and handshake_ack_frame[c] < 0 and synack_frames[c] and not syn and ack[i] != NONE \
                and ack[i] >= 1:  # fmt: skip
            handshake_ack_frame[c] = frame[i]
        if f & FIN and fin_frame[c, s] < 0:
            fin_frame[c, s] = frame[i]
        if f & RST:
            rst_frames[c, s] += 1
        # The state table (Tracker._event's tail).
        if f & RST:
            ev = E_RST
        elif f & FIN:
            ev = E_FIN
        elif syn:
            ev = E_SYN_ACK if s == 1 else (E_ORIG_SYN_ACK if f & ACK else E_SYN)
        else:
            ev = E_DATA if pl else E_ACK
        new = peer_rules[old, ev, peer]
        if new < 0:
            new = trans[old, ev]
        if new < 0:
            if n_findings < len(findings_out):
                findings_out[n_findings, 0] = c
                findings_out[n_findings, 1] = frame[i]
                findings_out[n_findings, 2] = ev
                findings_out[n_findings, 3] = old
            n_findings += 1
            continue
        if state[c, s] != new:
            prev_state[c, s] = state[c, s]
            state[c, s] = new
        pnew = effects[old, ev, peer, prev_state[c, 1 - s]]
        if pnew < 0:
            pnew = effects[old, ev, peer, ANY]
        if pnew >= 0 and state[c, 1 - s] != pnew:
            prev_state[c, 1 - s] = state[c, 1 - s]
            state[c, 1 - s] = pnew
    return n_findings


C_SOURCE = """
#include <stdint.h>
/* The same loop as event_loop, in C: flat arrays, [c * width + k]. */
static void letter(int8_t *history, int16_t *hlen, int64_t c, int code, int s, int hmax) {
    if (hlen[c] < hmax) { history[c * hmax + hlen[c]] = (int8_t)(code + 16 * s); hlen[c]++; }
}
int64_t event_loop(int64_t n, const int64_t *frame, const int64_t *conn, const int64_t *side,
        const int64_t *flags, const int64_t *plen, const int64_t *seq_raw, const int64_t *ack,
        const int64_t *retx_count, const int64_t *zw_count, const int64_t *pure_ack,
        const int8_t *trans, const int8_t *peer_rules, const int8_t *effects,
        int8_t *state, int8_t *prev_state, int8_t *history, int16_t *hlen, int16_t *once,
        int64_t *last_flag_seq, int64_t *uncounted, int32_t *syn_frames, int32_t *synack_frames,
        int32_t *synack_after_ack, int64_t *isn, int64_t *handshake_ack_frame, int64_t *fin_frame,
        int64_t *first_payload_frame, int32_t *rst_frames, int64_t *findings, int64_t max_findings) {
    const int NS = %(NS)d, NE = %(NE)d, HMAX = %(HMAX)d, ANY = %(ANY)d;
    int64_t n_findings = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t c = conn[i], f = flags[i], pl = plen[i];
        int s = (int)side[i], p = 1 - s;
        int old = state[c * 2 + s], peer = state[c * 2 + p];
        int64_t control = f & (%(SYN)d | %(FIN)d | %(RST)d);
        if (control & (control - 1)) {
            int code = (f & %(FIN)d) && (f & %(RST)d) ? %(L_I)d : %(L_Q)d;
            int bit = 1 << ((code == %(L_I)d ? 0 : 1) * 2 + s + 4);
            if (!(once[c] & bit)) { once[c] |= bit; letter(history, hlen, c, code, s, HMAX); }
        } else if (control) {
            int kind, code; int64_t number;
            if (control == %(SYN)d) { kind = 0; code = (f & %(ACK)d) ? %(L_H)d : %(L_S)d; number = seq_raw[i]; }
            else if (control == %(FIN)d) { kind = 1; code = %(L_F)d; number = (seq_raw[i] + pl) %% 4294967296LL; }
            else { kind = 2; code = %(L_R)d; number = seq_raw[i]; }
            int key = kind * 2 + s;
            if (last_flag_seq[c * 6 + key] != number) letter(history, hlen, c, code, s, HMAX);
            last_flag_seq[c * 6 + key] = number;
        } else if (pl || pure_ack[i]) {
            int code = pl ? %(L_D)d : %(L_A)d;
            int bit = 1 << ((code == %(L_A)d ? 0 : 1) * 2 + s);
            if (!(once[c] & bit)) { once[c] |= bit; letter(history, hlen, c, code, s, HMAX); }
        }
        for (int w = 0; w < 2; w++) {  /* W, then T */
            int64_t count = w == 0 ? zw_count[i] : retx_count[i];
            int ignored = w == 0 ? ((f & %(RST)d) != 0 || old == %(S_RESET)d || peer == %(S_CLOSED)d)
                                 : old == %(S_RESET)d;
            int slot = w == 0 ? 2 + s : s, code = w == 0 ? %(L_W)d : %(L_T)d;
            if (!count) continue;
            if (ignored) { uncounted[c * 4 + slot]++; continue; }
            int64_t k = count - uncounted[c * 4 + slot];
            while (k >= 10 && k %% 10 == 0) k /= 10;
            if (k == 1) letter(history, hlen, c, code, s, HMAX);
        }
        int64_t syn = f & %(SYN)d;
        if (syn && !(f & %(ACK)d)) {
            if (s == 0) { syn_frames[c]++; if (isn[c * 2] < 0) isn[c * 2] = seq_raw[i]; }
        } else if (syn && s == 1) {
            if (synack_frames[c] && handshake_ack_frame[c] >= 0) synack_after_ack[c]++;
            synack_frames[c]++;
            if (isn[c * 2 + 1] < 0) isn[c * 2 + 1] = seq_raw[i];
        }
        if (pl && first_payload_frame[c * 2 + s] < 0) first_payload_frame[c * 2 + s] = frame[i];
        if (s == 0 && (f & %(ACK)d) && handshake_ack_frame[c] < 0 && synack_frames[c] && !syn
                && ack[i] != %(NONE)dLL && ack[i] >= 1)
            handshake_ack_frame[c] = frame[i];
        if ((f & %(FIN)d) && fin_frame[c * 2 + s] < 0) fin_frame[c * 2 + s] = frame[i];
        if (f & %(RST)d) rst_frames[c * 2 + s]++;
        int ev;
        if (f & %(RST)d) ev = %(E_RST)d;
        else if (f & %(FIN)d) ev = %(E_FIN)d;
        else if (syn) ev = s == 1 ? %(E_SYN_ACK)d : ((f & %(ACK)d) ? %(E_ORIG_SYN_ACK)d : %(E_SYN)d);
        else ev = pl ? %(E_DATA)d : %(E_ACK)d;
        int nw = peer_rules[(old * NE + ev) * NS + peer];
        if (nw < 0) nw = trans[old * NE + ev];
        if (nw < 0) {
            if (n_findings < max_findings) {
                int64_t *out = findings + n_findings * 4;
                out[0] = c; out[1] = frame[i]; out[2] = ev; out[3] = old;
            }
            n_findings++;
            continue;
        }
        if (state[c * 2 + s] != nw) { prev_state[c * 2 + s] = state[c * 2 + s]; state[c * 2 + s] = (int8_t)nw; }
        int base = ((old * NE + ev) * NS + peer) * (NS + 1);
        int pn = effects[base + prev_state[c * 2 + p]];
        if (pn < 0) pn = effects[base + ANY];
        if (pn >= 0 && state[c * 2 + p] != pn) {
            prev_state[c * 2 + p] = state[c * 2 + p];
            state[c * 2 + p] = (int8_t)pn;
        }
    }
    return n_findings;
}
"""


def c_loop():
    """The C loop, compiled with the system's cc into a temporary directory; None without a compiler."""
    import ctypes
    import shutil
    import subprocess
    import tempfile

    if not shutil.which("cc"):
        return None
    constants = """NS NE ANY SYN FIN RST ACK L_S L_H L_A L_D L_F L_R L_T L_W L_I L_Q S_RESET S_CLOSED E_SYN E_SYN_ACK
                   E_ORIG_SYN_ACK E_DATA E_ACK E_FIN E_RST NONE"""
    names = {k: globals()[k] for k in constants.split()}
    names["HMAX"] = HISTORY_MAX
    build = tempfile.mkdtemp(prefix="rstscope-kernel-")
    source, lib = f"{build}/loop.c", f"{build}/loop.so"
    with open(source, "w") as out:
        out.write(C_SOURCE % names)
    subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", lib, source], check=True)
    fn = ctypes.CDLL(lib).event_loop
    fn.restype = ctypes.c_int64

    def call(*arrays):
        *inputs, findings = arrays
        pointers = [ctypes.c_void_p(a.ctypes.data) for a in (*inputs, findings)]
        n = len(inputs[0])
        return fn(ctypes.c_int64(n), *pointers, ctypes.c_int64(len(findings)))

    shutil.rmtree(build, ignore_errors=True)  # the library stays loaded
    return call


def run_loop(fn, cols: dict[str, np.ndarray], n_conns: int) -> dict[str, np.ndarray]:
    st = new_state(n_conns)
    findings = np.zeros((len(cols["frame"]) // 4 + 16, 4), np.int64)
    trans, peer_rules, effects = tables()
    n = fn(*(cols[k] for k in COLUMNS), trans, peer_rules, effects,
           *(st[k] for k in st if k != "findings"), findings)  # fmt: skip
    st["findings"] = findings[:n]
    return st


def rounds(cols: dict[str, np.ndarray], n_conns: int) -> dict[str, np.ndarray]:
    """The state table only, vectorised: round k applies every connection's k-th event row at once."""
    trans, peer_rules, effects = tables()
    st = new_state(n_conns)
    conn, side, flags, plen = cols["conn"], cols["side"], cols["flags"], cols["plen"]
    order = np.argsort(conn, kind="stable")
    sorted_conn = conn[order]
    start = np.ones(len(order), bool)
    start[1:] = sorted_conn[1:] != sorted_conn[:-1]
    first = np.flatnonzero(start)
    rank = np.arange(len(order)) - np.repeat(first, np.diff(np.append(first, len(order))))
    ev = np.where(flags & RST, E_RST, np.where(flags & FIN, E_FIN, np.where(
        flags & SYN, np.where(side == 1, E_SYN_ACK, np.where(flags & ACK, E_ORIG_SYN_ACK, E_SYN)),
        np.where(plen > 0, E_DATA, E_ACK))))  # fmt: skip
    state, prev = st["state"], st["prev_state"]
    found = []
    for k in range(int(rank.max()) + 1 if len(rank) else 0):
        rows = order[rank == k]
        c, s, e = conn[rows], side[rows], ev[rows]
        old, peer = state[c, s], state[c, 1 - s]
        new = peer_rules[old, e, peer]
        new = np.where(new < 0, trans[old, e], new)
        bad = new < 0
        found.append(np.stack([c[bad], cols["frame"][rows][bad], e[bad], old[bad]], axis=1))
        ok = ~bad
        c, s, e, old, peer, new = c[ok], s[ok], e[ok], old[ok], peer[ok], new[ok]
        changed = state[c, s] != new
        prev[c[changed], s[changed]] = state[c[changed], s[changed]]
        state[c, s] = new
        pnew = effects[old, e, peer, prev[c, 1 - s]]
        pnew = np.where(pnew < 0, effects[old, e, peer, ANY], pnew)
        moved = (pnew >= 0) & (state[c, 1 - s] != pnew)
        cm, sm = c[moved], 1 - s[moved]
        prev[cm, sm] = state[cm, sm]
        state[cm, sm] = pnew[moved]
    st["findings"] = np.concatenate(found) if found else np.zeros((0, 4), np.int64)
    return st


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", help="rows.npz from --dump (or, with --dump, the capture)")
    parser.add_argument("out", nargs="?", help="with --dump: where to save the rows")
    parser.add_argument("--dump", action="store_true")
    parser.add_argument("--python-rows", type=int, default=200_000, help="rows the plain-Python loop runs on")
    args = parser.parse_args(argv)
    if args.dump:
        n = dump(args.rows, args.out)
        print(f"saved {n:,} event rows to {args.out}")
        return 0
    saved = dict(np.load(args.rows))
    cols = {k: saved[k] for k in COLUMNS}
    n_rows = len(cols["frame"])
    n_conns = int(cols["conn"].max()) + 1
    print(f"{n_rows:,} event rows, {n_conns:,} connections")
    results = {}

    k = min(args.python_rows, n_rows)
    part = {name: v[:k] for name, v in cols.items()}
    start = time.perf_counter()
    py = run_loop(event_loop, part, n_conns)
    results["python loop"] = (time.perf_counter() - start) / k
    try:
        import numba
    except ImportError:
        numba = None
    full = None
    if numba is not None:
        start = time.perf_counter()
        compiled = numba.njit(cache=True)(event_loop)
        run_loop(compiled, {name: v[:10] for name, v in cols.items()}, n_conns)
        print(f"numba: first call {time.perf_counter() - start:.2f} s ({len(compiled.stats.cache_hits)} cache hits)")
        _same(py, run_loop(compiled, part, n_conns), "numba vs python")
        results["numba loop (all rows)"], full = _best_of_3(compiled, cols, n_conns, saved)
    start = time.perf_counter()
    loop_c = c_loop()
    if loop_c is not None:
        print(f"C: compiled in {time.perf_counter() - start:.2f} s")
        _same(py, run_loop(loop_c, part, n_conns), "C vs python")
        results["C loop, cc -O2 (all rows)"], full = _best_of_3(loop_c, cols, n_conns, saved)
    start = time.perf_counter()
    rd = rounds(cols, n_conns)
    results["numpy rounds (state table only)"] = (time.perf_counter() - start) / n_rows
    if full is not None:
        _same({k: full[k] for k in ("state", "prev_state")}, {k: rd[k] for k in ("state", "prev_state")},
              "rounds vs the compiled loop")  # fmt: skip
        assert len(rd["findings"]) == len(full["findings"]), "rounds vs the compiled loop: findings"
    for name, per_row in results.items():
        print(f"{name:<36} {per_row * 1e9:10.0f} ns per event row")
    return 0


def _best_of_3(fn, cols: dict, n_conns: int, saved: dict) -> tuple[float, dict]:
    """Seconds per event row (best of 3 runs over all rows), and the result, checked against the tracker."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        result = run_loop(fn, cols, n_conns)
        best = min(best, time.perf_counter() - start)
    _same_as_tracker(result, saved)
    return best / len(cols["frame"]), result


def history_text(st: dict, c: int) -> str:
    codes = st["history"][c, : st["history_len"][c]]
    return "".join(LETTERS[x % 16] if x < 16 else LETTERS[x % 16].lower() for x in codes.tolist())


def _same_as_tracker(st: dict, saved: dict) -> None:
    """The loop's states, history letters and finding counts are the tracker's, connection by connection."""
    assert np.array_equal(st["state"], saved["expect_state"]), "states differ from the tracker's"
    histories = [history_text(st, c) for c in range(len(st["state"]))]
    bad = [c for c, h in enumerate(histories) if h != saved["expect_history"][c]]
    assert not bad, f"history differs from the tracker's for {len(bad)} connections, e.g. {bad[:3]}"
    per_conn = np.bincount(st["findings"][:, 0], minlength=len(st["state"]))
    assert np.array_equal(per_conn, saved["expect_findings"]), "findings differ from the tracker's"
    print(f"the loop agrees with the tracker on {len(histories):,} connections (states, history, findings)")


def _same(a: dict, b: dict, what: str) -> None:
    for key in a:
        assert np.array_equal(a[key], b[key]), f"{what}: {key} differs"


if __name__ == "__main__":
    sys.exit(main())
