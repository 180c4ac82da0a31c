/* The event pass as one loop over the event rows of a chunk (see events.py, which prepares the rows
 * and turns what this loop writes into records).
 *
 * This file holds bookkeeping only.  The TCP rules come from Python:
 *   - the state table (state.py's TRANSITIONS, PEER_RULES, PEER_EFFECTS) arrives as int8 tables, and
 *     the event of each row (state.events_of) as a table by flags, side and payload, which event_rows
 *     looks up into a row column: the loops only index them;
 *   - a reply-RST is matched to the segment it answers in Python (sequence.answers), from the peer's
 *     recent segments this loop copies out at each RST.
 * What is written here is the history alphabet's bookkeeping (state.py HISTORY_LETTERS: once per side,
 * again on a new sequence number, log scale) and which frames a connection remembers.
 *
 * Layout: one int64 row of EV_WIDTH columns per connection slot; per-side columns are pairs (side 0,
 * side 1).  A slot's rings live in shared pools (struct pool): its recent segments in blocks of BLOCK
 * segments, taken when a side writes into a block it does not have yet and given back when the ring is
 * forgotten; its keepalive probes in one block taken at its first probe.  Most connections write a few
 * segments and never probe: they hold one or two small blocks instead of both rings in full.  The loop
 * stops before a row when a pool has no free block left; events.py grows the pool and resumes there.
 * The block between the cdef markers is also what cffi declares (_kernel_build.py). */
#include <stdint.h>
#include <string.h>

/* cdef begin */
enum {
    /* per slot */
    EV_STATE = 0, EV_PREV = 2, EV_HLEN = 4, EV_ONCE = 5, EV_FLAGSEQ = 6 /* (S/H, F, R) x side */,
    EV_UNCOUNTED = 12 /* (T, W) x side */, EV_SYN_N = 16, EV_SYN_FIRST, EV_SYN_LAST, EV_SA_N, EV_SA_FIRST,
    EV_SA_LAST, EV_SAA_N, EV_SAA_FIRST, EV_SAA_LAST, EV_ISN = 25, EV_HS_ACK = 27, EV_FIN = 28,
    EV_PAYLOAD = 30, EV_RST_N = 32, EV_RST_FIRST = 34, EV_AFTER_N = 36, EV_PROBE_N = 37, EV_RECENT_N = 39,
    EV_WIDTH = 41,
    HISTORY_MAX = 24, RING = 16, BLOCK = 4 /* recent segments per pool block */, BLOCKS = RING / BLOCK,
    SEG = 5 /* a recent segment, kept: frame, seq, ack, seq_raw << 32 | ack_raw, payload << 16 | flags */,
    X_SEG = 7 /* a recent segment, written out: frame, flags, seq_raw, ack_raw, payload, seq, ack */,
    /* per event row */
    R_SLOT = 0, R_SIDE, R_FLAGS, R_PLEN, R_FRAME, R_TS, R_SEQ, R_ACK, R_SEQ_RAW, R_ACK_RAW, R_RETX, R_ZW,
    R_PURE_ACK, R_AFTER_GAP, R_PROBE, R_EVENT, R_WIDTH,
    /* per RST row written out */
    X_ROW = 0, X_SENDER_STATE, X_PEER_STATE, X_SYN_N, X_SA_N, X_SENDER_FIN, X_PEER_FIN, X_PRIOR_RST,
    X_FIRST_PAYLOAD, X_SYNACKS_BEFORE, X_SAA_BEFORE, X_PROBES_N, X_PROBES /* RING x (frame, ts), newest first */,
    X_RECENT_N = X_PROBES + 2 * RING, X_RECENT /* RING x X_SEG, newest first */, X_WIDTH = X_RECENT + RING * X_SEG,
    /* letters: index into events.LETTERS; + 16 for the responder (lower case) */
    L_S = 0, L_H, L_A, L_D, L_F, L_R, L_T, L_W, L_I, L_Q, L_CARET,
    /* counts returned */
    N_FINDINGS = 0, N_AFTER, N_RSTS, N_OVERFLOW
};
struct pool {
    int64_t *data;  /* blocks of numbers, one after the other */
    int32_t *free;  /* a stack of the free blocks' numbers */
    int64_t n_free;
};
struct tables {
    const int8_t *transitions, *peer_rules, *peer_effects;
    int64_t n_states, n_events, reset, closed, none, stale_frames, after_kept;
};
int64_t event_loop(const struct tables *t, int64_t start, int64_t n, const int64_t *rows, int64_t *ev,
                   int8_t *history, int32_t *blocks, struct pool *recent, int32_t *probe_block,
                   struct pool *probes, int64_t *findings, int64_t *after, int64_t *rsts, int64_t *overflow,
                   int64_t *counts);
void event_rows(int64_t n, const int64_t *idx, int64_t k, const int64_t *const *columns, const int64_t *at,
                const int8_t *event_of, int64_t *rows);
/* cdef end */

#define FIN 0x01
#define SYN 0x02
#define RST 0x04
#define ACK 0x10
#define SEQ_MOD 4294967296LL

static void letter(int64_t *e, int8_t *hist, int64_t row, int code, int s, int64_t *overflow, int64_t *counts) {
    int8_t c = (int8_t)(code + 16 * s);
    if (e[EV_HLEN] < HISTORY_MAX) {
        hist[e[EV_HLEN]] = c;
    } else {  /* a long history: the rest in order, by event row (events.py keeps it per connection) */
        int64_t *o = overflow + 2 * counts[N_OVERFLOW]++;
        o[0] = row;
        o[1] = c;
    }
    e[EV_HLEN]++;
}

static void once(int64_t *e, int8_t *hist, int64_t row, int code, int bit, int s, int64_t *overflow,
                 int64_t *counts) {
    if (!(e[EV_ONCE] & bit)) {
        e[EV_ONCE] |= bit;
        letter(e, hist, row, code, s, overflow, counts);
    }
}

/* A T or W letter at the 1st, 10th, 100th ... counted occurrence (state.py HISTORY_LETTERS). */
static void scaled(int64_t *e, int8_t *hist, int64_t row, int code, int64_t count, int ignored, int slot, int s,
                   int64_t *overflow, int64_t *counts) {
    if (!count) return;
    if (ignored) { e[EV_UNCOUNTED + slot]++; return; }
    int64_t k = count - e[EV_UNCOUNTED + slot];
    while (k >= 10 && k % 10 == 0) k /= 10;
    if (k == 1) letter(e, hist, row, code, s, overflow, counts);
}

/* Segment k (0 .. RING - 1) of a side's recent ring, whose blocks are blk[0 .. BLOCKS - 1]. */
static int64_t *segment(const struct pool *pool, const int32_t *blk, int64_t k) {
    return pool->data + ((int64_t)blk[k / BLOCK] * BLOCK + k % BLOCK) * SEG;
}

static int64_t ring_last_frame(const struct pool *pool, const int32_t *blk, int64_t count) {
    return count ? segment(pool, blk, (count - 1) % RING)[0] : 0;
}

static int32_t take_block(struct pool *pool) {
    return pool->free[--pool->n_free];
}

int64_t event_loop(const struct tables *t, int64_t start, int64_t n, const int64_t *rows, int64_t *ev,
                   int8_t *history, int32_t *blocks, struct pool *recent, int32_t *probe_block,
                   struct pool *probes, int64_t *findings, int64_t *after, int64_t *rsts, int64_t *overflow,
                   int64_t *counts) {
    const int64_t NS = t->n_states, NE = t->n_events;
    for (int64_t i = start; i < n; i++) {
        /* A row takes at most one block of each pool: stop before it when one has none left. */
        if (recent->n_free < 1 || probes->n_free < 1) return i;
        const int64_t *r = rows + i * R_WIDTH;
        int64_t slot = r[R_SLOT], f = r[R_FLAGS], pl = r[R_PLEN], frame = r[R_FRAME];
        int s = (int)r[R_SIDE], p = 1 - s;
        int64_t *e = ev + slot * EV_WIDTH;
        int8_t *hist = history + slot * HISTORY_MAX;
        int32_t *blk = blocks + slot * 2 * BLOCKS;  /* side 0's blocks, then side 1's */
        /* Recent segments no longer the last ones (rows skipped, or too old): forgotten, blocks given back. */
        int64_t last = ring_last_frame(recent, blk, e[EV_RECENT_N]);
        int64_t last1 = ring_last_frame(recent, blk + BLOCKS, e[EV_RECENT_N + 1]);
        if (last1 > last) last = last1;
        if (r[R_AFTER_GAP] || ((e[EV_RECENT_N] || e[EV_RECENT_N + 1]) && 0 < last && last < frame - t->stale_frames)) {
            e[EV_RECENT_N] = 0;
            e[EV_RECENT_N + 1] = 0;
            for (int b = 0; b < 2 * BLOCKS; b++) {
                if (blk[b] >= 0) recent->free[recent->n_free++] = blk[b];
                blk[b] = -1;
            }
        }
        int old = (int)e[EV_STATE + s], peer = (int)e[EV_STATE + p];

        /* History letters. */
        int64_t control = f & (SYN | FIN | RST);
        if (control & (control - 1)) {  /* two or more of SYN, FIN, RST: I or Q, once */
            int is_i = (f & FIN) && (f & RST);
            once(e, hist, i, is_i ? L_I : L_Q, 1 << ((is_i ? 0 : 1) * 2 + s + 4), s, overflow, counts);
        } else if (control) {  /* S/H, F, R: again only on a new sequence number (S and H share one) */
            int kind, code;
            int64_t number;
            if (control == SYN) { kind = 0; code = (f & ACK) ? L_H : L_S; number = r[R_SEQ_RAW]; }
            else if (control == FIN) { kind = 1; code = L_F; number = (r[R_SEQ_RAW] + pl) % SEQ_MOD; }
            else { kind = 2; code = L_R; number = r[R_SEQ_RAW]; }
            if (e[EV_FLAGSEQ + kind * 2 + s] != number) letter(e, hist, i, code, s, overflow, counts);
            e[EV_FLAGSEQ + kind * 2 + s] = number;
        } else if (pl) {
            once(e, hist, i, L_D, 1 << (2 + s), s, overflow, counts);
        } else if (r[R_PURE_ACK]) {
            once(e, hist, i, L_A, 1 << s, s, overflow, counts);
        }
        /* W before T, as Zeek writes them; the occurrences Zeek ignores are not counted. */
        scaled(e, hist, i, L_W, r[R_ZW], (f & RST) || old == t->reset || peer == t->closed, 2 + s, s, overflow, counts);
        scaled(e, hist, i, L_T, r[R_RETX], old == t->reset, s, s, overflow, counts);

        /* Handshake, payload, FIN frames. */
        int64_t syn = f & SYN;
        if (syn && !(f & ACK)) {
            if (s == 0) {
                e[EV_SYN_N]++;
                if (e[EV_SYN_FIRST] < 0) e[EV_SYN_FIRST] = frame;
                e[EV_SYN_LAST] = frame;
                if (e[EV_ISN] < 0) e[EV_ISN] = r[R_SEQ_RAW];
            }
        } else if (syn && s == 1) {
            if (e[EV_SA_N] && e[EV_HS_ACK] >= 0) {
                e[EV_SAA_N]++;
                if (e[EV_SAA_FIRST] < 0) e[EV_SAA_FIRST] = frame;
                e[EV_SAA_LAST] = frame;
            }
            e[EV_SA_N]++;
            if (e[EV_SA_FIRST] < 0) e[EV_SA_FIRST] = frame;
            e[EV_SA_LAST] = frame;
            if (e[EV_ISN + 1] < 0) e[EV_ISN + 1] = r[R_SEQ_RAW];
        }
        if (pl && e[EV_PAYLOAD + s] < 0) e[EV_PAYLOAD + s] = frame;
        if (s == 0 && (f & ACK) && e[EV_HS_ACK] < 0 && e[EV_SA_N] && !syn && r[R_ACK] != t->none && r[R_ACK] >= 1)
            e[EV_HS_ACK] = frame;
        if ((f & FIN) && e[EV_FIN + s] < 0) e[EV_FIN + s] = frame;
        if ((e[EV_RST_N] || e[EV_RST_N + 1]) && e[EV_AFTER_N] < t->after_kept) {
            after[counts[N_AFTER]++] = i;
            e[EV_AFTER_N]++;
        }
        if (r[R_PROBE] && probe_block[slot] < 0) probe_block[slot] = take_block(probes);
        int64_t *prb = probe_block[slot] >= 0 ? probes->data + (int64_t)probe_block[slot] * 2 * RING * 2 : NULL;
        if (r[R_PROBE]) {
            int64_t *pr = prb + s * RING * 2 + (e[EV_PROBE_N + s] % RING) * 2;
            pr[0] = frame;
            pr[1] = r[R_TS];
            e[EV_PROBE_N + s]++;
        }
        if (f & RST) {  /* what the connection knew just before this RST */
            int64_t *x = rsts + X_WIDTH * counts[N_RSTS]++;
            x[X_ROW] = i;
            x[X_SENDER_STATE] = old;
            x[X_PEER_STATE] = peer;
            x[X_SYN_N] = e[EV_SYN_N];
            x[X_SA_N] = e[EV_SA_N];
            x[X_SENDER_FIN] = e[EV_FIN + s];
            x[X_PEER_FIN] = e[EV_FIN + p];
            x[X_PRIOR_RST] = e[EV_RST_FIRST + s];
            x[X_FIRST_PAYLOAD] = e[EV_PAYLOAD + s];
            x[X_SYNACKS_BEFORE] = e[EV_SA_N] - (e[EV_SA_LAST] == frame);
            x[X_SAA_BEFORE] = e[EV_SAA_N] - (e[EV_SAA_LAST] == frame);
            int64_t np_ = e[EV_PROBE_N + s] < RING ? e[EV_PROBE_N + s] : RING;
            x[X_PROBES_N] = np_;
            for (int64_t k = 0; k < np_; k++) {
                const int64_t *pr = prb + s * RING * 2 + ((e[EV_PROBE_N + s] - 1 - k) % RING) * 2;
                x[X_PROBES + 2 * k] = pr[0];
                x[X_PROBES + 2 * k + 1] = pr[1];
            }
            int64_t nr = e[EV_RECENT_N + p] < RING ? e[EV_RECENT_N + p] : RING;
            x[X_RECENT_N] = nr;
            for (int64_t k = 0; k < nr; k++) {
                const int64_t *seg = segment(recent, blk + p * BLOCKS, (e[EV_RECENT_N + p] - 1 - k) % RING);
                int64_t *out = x + X_RECENT + k * X_SEG;
                out[0] = seg[0]; out[1] = seg[4] & 0xFFFF; out[2] = (int64_t)((uint64_t)seg[3] >> 32);
                out[3] = seg[3] & 0xFFFFFFFFLL; out[4] = seg[4] >> 16; out[5] = seg[1]; out[6] = seg[2];
            }
            e[EV_RST_N + s]++;
            if (e[EV_RST_FIRST + s] < 0) e[EV_RST_FIRST + s] = frame;
        }
        int64_t at = e[EV_RECENT_N + s] % RING;
        if (blk[s * BLOCKS + at / BLOCK] < 0) blk[s * BLOCKS + at / BLOCK] = take_block(recent);
        int64_t *seg = segment(recent, blk + s * BLOCKS, at);
        seg[0] = frame; seg[1] = r[R_SEQ]; seg[2] = r[R_ACK];
        seg[3] = (int64_t)(((uint64_t)r[R_SEQ_RAW] << 32) | ((uint64_t)r[R_ACK_RAW] & 0xFFFFFFFFu));
        seg[4] = (pl << 16) | (f & 0xFFFF);
        e[EV_RECENT_N + s]++;

        /* The state table (state.py): PEER_RULES before TRANSITIONS; no entry: a finding. */
        int64_t event = r[R_EVENT];
        int nw = t->peer_rules[(old * NE + event) * NS + peer];
        if (nw < 0) nw = t->transitions[old * NE + event];
        if (nw < 0) {
            int64_t *out = findings + 3 * counts[N_FINDINGS]++;
            out[0] = i; out[1] = event; out[2] = old;
            continue;
        }
        if (e[EV_STATE + s] != nw) { e[EV_PREV + s] = e[EV_STATE + s]; e[EV_STATE + s] = nw; }
        const int8_t *effects = t->peer_effects + ((old * NE + event) * NS + peer) * (NS + 1);
        int pn = effects[e[EV_PREV + p]];
        if (pn < 0) pn = effects[NS];  /* the entry for any previous state */
        if (pn >= 0 && e[EV_STATE + p] != pn) { e[EV_PREV + p] = e[EV_STATE + p]; e[EV_STATE + p] = pn; }
    }
    return n;
}

/* The loop's rows (R_WIDTH columns) of the chunk's rows ``idx``: column at[c] of row i is columns[c][idx[i]],
 * and R_EVENT is event_of[key], key = side | RST << 1 | FIN << 2 | SYN << 3 | ACK << 4 | (payload > 0) << 5
 * (the flags as bits present): a table events.py makes from state.events_of, which holds the rule.  One
 * pass, row by row, in place of a gather per column and a select over the rows. */
void event_rows(int64_t n, const int64_t *idx, int64_t k, const int64_t *const *columns, const int64_t *at,
                const int8_t *event_of, int64_t *rows) {
    for (int64_t i = 0; i < n; i++) {
        int64_t j = idx[i], *r = rows + i * R_WIDTH;
        for (int64_t c = 0; c < k; c++) r[at[c]] = columns[c][j];
        int64_t f = r[R_FLAGS];
        int key = (r[R_SIDE] != 0) | ((f & RST) != 0) << 1 | ((f & FIN) != 0) << 2 | ((f & SYN) != 0) << 3 |
                  ((f & ACK) != 0) << 4 | (r[R_PLEN] > 0) << 5;
        r[R_EVENT] = event_of[key];
    }
}
