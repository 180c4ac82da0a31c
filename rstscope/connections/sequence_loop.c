/* The sequence pass (sequence.py) as one loop over a chunk's rows: per row, its running values in
 * sequence space and in flight; per connection, what is carried to the next chunk.
 *
 * Rows come grouped by connection slot, in capture order inside a group; groups are independent, so
 * this is the order of the packets as far as any one connection can tell.  Each group works on its
 * slot's row of ``table`` (the carried columns, ConnArrays.INT_COLUMNS), in place: the few values the
 * event pass needs as they were carried *into* the chunk are copied out by the caller first.
 * Sequence numbers unwrap as rstscope/seqnum.py states: the distance from a to b is the signed 32-bit
 * value of (b - a) mod 2**32.  The rules of which rows are event rows are sequence.py's docstring.
 * The block between the cdef markers is also what cffi declares (_kernel_build.py). */
#include <stdint.h>

/* cdef begin */
enum {
    /* carried columns, in the order of ConnArrays.INT_COLUMNS (checked at import); per-side pairs
     * are (side 0, side 1) */
    C_ORIG_IS_A = 0, C_ANCHOR_RAW0 = 1, C_ANCHOR_VAL0 = 3, C_LAST_SEQ_RAW0 = 5, C_LAST_SEQ_VAL0 = 7,
    C_LAST_ACK_RAW0 = 9, C_LAST_ACK_VAL0 = 11, C_MAX_END0 = 13, C_MAX_ACK0 = 15, C_PKTS0 = 17,
    C_BYTES0 = 19, C_RETX0 = 21, C_ZW0 = 23, C_OLD0 = 25, C_SEEN_DATA0 = 27, C_SEEN_PURE_ACK0 = 29,
    C_CLOSING = 31, C_SKIPPED = 32, C_LAST_FRAME0 = 33, C_LAST_FLAGS0 = 35, C_LAST_LEN0 = 37,
    C_LAST_ACKREL0 = 39, C_LAST_SEQREL0 = 41, C_FIRST_NS = 43, C_LAST_NS = 44, C_FIRST_SEQ_VAL0 = 45,
    C_LAST_FRAME = 47, C_TTL_MIN0 = 48, C_TTL_MAX0 = 50, C_TTL_N0 = 52, C_TS_N0 = 54,
    C_LAST_PLAIN_IP_ID0 = 56, C_LAST_NS0 = 58, C_LAST_GAP0 = 60, C_LAST_PLAIN_FRAME0 = 62, C_WIDTH = 64,
    SQ_ACKS = 8 /* PEER_ACKS_KEPT */, SQ_EARLY = 4 /* EARLY_PACKETS */
};
struct sq_rows {  /* per row, grouped by slot */
    const int64_t *slot, *side, *flags, *seq, *ack, *plen, *ts, *frame, *ttl, *ip_id, *window, *has_ts;
};
struct sq_out {  /* per row, but rst_acks */
    int64_t *seq_val, *ack_val, *snd_nxt_before, *own_ack_before, *peer_acked, *peer_snd_nxt, *old_count,
        *zw_count, *gap, *peer_prev, *last_plain;
    uint8_t *pure_ack, *probe, *events, *after_gap;
    int64_t *rst_acks;  /* per RST row in row order: the peer's last SQ_ACKS ACK segments, frames then
                           acks, oldest first (frame -1: none) */
};
void sequence_pass(int64_t n, int64_t none, const struct sq_rows *in, int64_t *table, int64_t *ring_frame,
                   int64_t *ring_ack, struct sq_out *out);
/* cdef end */

#define SQ_FIN 0x01
#define SQ_SYN 0x02
#define SQ_RST 0x04
#define SQ_ACK 0x10

static int64_t sq_diff(int64_t a, int64_t b) {  /* seqnum.seq_diff */
    int64_t d = (b - a) & 0xffffffffLL;
    return d >= (1LL << 31) ? d - (1LL << 32) : d;
}

static int sq_power_of_ten(int64_t count) {  /* 1, 10, 100, ...: Zeek logs T and W on that scale */
    while (count >= 10 && count % 10 == 0) count /= 10;
    return count == 1;
}

static int64_t sq_max(int64_t a, int64_t b) { return a > b ? a : b; }

/* A group's sequence-space anchors, where none is carried: the side's first segment in the chunk, else
 * the first ack of the peer in the chunk (rows first .. end-1). */
static void sq_anchors(const struct sq_rows *in, int64_t first, int64_t end, int64_t *st) {
    for (int s = 0; s < 2; s++) {
        if (st[C_ANCHOR_RAW0 + s] >= 0) continue;
        int64_t own = -1, peer_ack = -1;
        for (int64_t i = first; i < end && own < 0; i++) {
            if (in->side[i] == s) own = i;
            else if (peer_ack < 0 && (in->flags[i] & SQ_ACK)) peer_ack = i;
        }
        if (own >= 0) st[C_ANCHOR_RAW0 + s] = in->seq[own];
        else if (peer_ack >= 0) st[C_ANCHOR_RAW0 + s] = in->ack[peer_ack];
        else continue;
        st[C_ANCHOR_VAL0 + s] = 0;
    }
}

void sequence_pass(int64_t n, int64_t none, const struct sq_rows *in, int64_t *table, int64_t *ring_frame,
                   int64_t *ring_ack, struct sq_out *out) {
    int64_t *st = table, last_of[2] = {-1, -1}, plain_of[2] = {-1, -1}, n_rst = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t slot = in->slot[i];
        if (i == 0 || slot != in->slot[i - 1]) {  /* a new group */
            st = table + slot * C_WIDTH;
            last_of[0] = last_of[1] = plain_of[0] = plain_of[1] = -1;
            if (st[C_ANCHOR_RAW0] < 0 || st[C_ANCHOR_RAW0 + 1] < 0) {
                int64_t end = i + 1;
                while (end < n && in->slot[end] == slot) end++;
                sq_anchors(in, i, end, st);
            }
        }
        int s = (int)in->side[i], p = 1 - s;
        int64_t f = in->flags[i], plen = in->plen[i], ts = in->ts[i], frame = in->frame[i];
        int syn = (f & SQ_SYN) != 0, fin = (f & SQ_FIN) != 0, rst = (f & SQ_RST) != 0, ack = (f & SQ_ACK) != 0;

        /* Unwrapped numbers: from the side's previous segment, else from its sequence-space anchor.  Acks
         * sent by side s live in the peer's space. */
        int64_t seq_val = st[C_LAST_SEQ_RAW0 + s] >= 0
                              ? st[C_LAST_SEQ_VAL0 + s] + sq_diff(st[C_LAST_SEQ_RAW0 + s], in->seq[i])
                              : st[C_ANCHOR_VAL0 + s] + sq_diff(st[C_ANCHOR_RAW0 + s], in->seq[i]);
        int64_t ack_val = none;
        out->own_ack_before[i] = st[C_MAX_ACK0 + s];
        if (ack) {
            ack_val = st[C_LAST_ACK_RAW0 + s] >= 0
                          ? st[C_LAST_ACK_VAL0 + s] + sq_diff(st[C_LAST_ACK_RAW0 + s], in->ack[i])
                          : st[C_ANCHOR_VAL0 + p] + sq_diff(st[C_ANCHOR_RAW0 + p], in->ack[i]);
            st[C_LAST_ACK_RAW0 + s] = in->ack[i];
            st[C_LAST_ACK_VAL0 + s] = ack_val;
            st[C_MAX_ACK0 + s] = sq_max(st[C_MAX_ACK0 + s], ack_val);
        }
        int64_t snd_nxt_before = st[C_MAX_END0 + s];
        if (!rst)  /* a RST's sequence number is not data sent: kept out of snd_nxt */
            st[C_MAX_END0 + s] = sq_max(st[C_MAX_END0 + s], seq_val + plen + syn + fin);
        out->seq_val[i] = seq_val;
        out->ack_val[i] = ack_val;
        out->snd_nxt_before[i] = snd_nxt_before;
        out->peer_acked[i] = st[C_MAX_ACK0 + p];
        out->peer_snd_nxt[i] = st[C_MAX_END0 + p];

        int known = snd_nxt_before != none, control = syn || fin || rst;
        int retx = plen > 0 && !syn && known && seq_val < snd_nxt_before;
        int zero_win = in->window[i] == 0 && !syn && !rst;
        int pure_ack = ack && plen == 0 && !control;
        int old_data = plen > 0 && !syn && known && seq_val + plen <= snd_nxt_before;
        int probe = plen <= 1 && ack && !control && known && seq_val == snd_nxt_before - 1;
        int letters = 0;
        out->old_count[i] = out->zw_count[i] = 0;
        if (old_data) {  /* Zeek's retransmission (history T): a segment whose payload was all sent before */
            out->old_count[i] = ++st[C_OLD0 + s];
            letters |= sq_power_of_ten(st[C_OLD0 + s]);
        }
        if (zero_win) {
            out->zw_count[i] = ++st[C_ZW0 + s];
            letters |= sq_power_of_ten(st[C_ZW0 + s]);
        }
        if (plen > 0 && !st[C_SEEN_DATA0 + s]) letters = st[C_SEEN_DATA0 + s] = 1;
        if (pure_ack && !st[C_SEEN_PURE_ACK0 + s]) letters = st[C_SEEN_PURE_ACK0 + s] = 1;
        st[C_RETX0 + s] += retx;

        /* Silence on the connection before the row (across chunks through the carried last time). */
        int64_t seen_before = st[C_PKTS0] + st[C_PKTS0 + 1];
        int64_t gap = seen_before ? ts - st[C_LAST_NS] : 0;
        if (!seen_before) st[C_FIRST_NS] = ts;
        st[C_PKTS0 + s]++;
        st[C_BYTES0 + s] += plen;
        int event = control || letters || st[C_CLOSING] || probe || st[C_PKTS0] + st[C_PKTS0 + 1] <= SQ_EARLY;
        if (fin || rst) st[C_CLOSING] = 1;
        /* Rows skipped since the connection's previous event row: its recent segments are then stale. */
        out->after_gap[i] = st[C_SKIPPED] != 0;
        st[C_SKIPPED] = !event;
        out->events[i] = (uint8_t)event;
        out->pure_ack[i] = (uint8_t)pure_ack;
        out->probe[i] = (uint8_t)probe;
        out->gap[i] = gap;

        /* The peer segment the row follows (what a reply-RST answers); the side's latest segment that is
         * neither a keepalive probe nor a RST. */
        out->peer_prev[i] = last_of[p];
        last_of[s] = i;
        if (!probe && !rst) {
            plain_of[s] = i;
            st[C_LAST_PLAIN_FRAME0 + s] = frame;
            st[C_LAST_PLAIN_IP_ID0 + s] = in->ip_id[i];
        }
        out->last_plain[i] = plain_of[s];

        /* At a RST, the peer's last ACK segments; then this row joins its side's ring if it has ACK. */
        int64_t *rf = ring_frame + (slot * 2 + s) * SQ_ACKS, *ra = ring_ack + (slot * 2 + s) * SQ_ACKS;
        if (rst) {
            int64_t *o = out->rst_acks + n_rst++ * 2 * SQ_ACKS;
            const int64_t *pf = ring_frame + (slot * 2 + p) * SQ_ACKS, *pa = ring_ack + (slot * 2 + p) * SQ_ACKS;
            for (int k = 0; k < SQ_ACKS; k++) {
                o[k] = pf[k];
                o[SQ_ACKS + k] = pa[k];
            }
        }
        if (ack) {
            for (int k = 0; k < SQ_ACKS - 1; k++) {
                rf[k] = rf[k + 1];
                ra[k] = ra[k + 1];
            }
            rf[SQ_ACKS - 1] = frame;
            ra[SQ_ACKS - 1] = ack_val;
        }

        /* Carried to the next chunk. */
        st[C_LAST_SEQ_RAW0 + s] = in->seq[i];
        st[C_LAST_SEQ_VAL0 + s] = seq_val;
        st[C_LAST_FRAME0 + s] = frame;
        st[C_LAST_FLAGS0 + s] = f;
        st[C_LAST_LEN0 + s] = plen;
        st[C_LAST_ACKREL0 + s] = ack_val;
        st[C_LAST_SEQREL0 + s] = seq_val;
        st[C_LAST_NS0 + s] = ts;
        st[C_LAST_GAP0 + s] = gap;
        if (st[C_FIRST_SEQ_VAL0 + s] == none) st[C_FIRST_SEQ_VAL0 + s] = seq_val;
        st[C_LAST_NS] = ts;
        st[C_LAST_FRAME] = frame;
        if (!rst) {  /* a RST's TTL is what is being judged: kept out of the sender's baseline */
            int64_t ttl = in->ttl[i];
            st[C_TTL_N0 + s]++;
            st[C_TS_N0 + s] += in->has_ts[i] != 0;
            if (ttl < st[C_TTL_MIN0 + s]) st[C_TTL_MIN0 + s] = ttl;
            if (ttl > st[C_TTL_MAX0 + s]) st[C_TTL_MAX0 + s] = ttl;
        }
    }
}
