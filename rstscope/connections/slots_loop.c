/* Slots put away and back (dormant.py): each dormant record holds one row of several per-slot arrays (the
 * sequence pass's table, the event loop's columns, the ACK ring, who the connection is), each at its own
 * offset.  Copying them row by row in one pass replaces a gather per array and a copy of each into the
 * record (and the reverse on waking): a SYN flood puts hundreds of thousands of slots away and back.
 * The block between the cdef markers is also what cffi declares (_kernel_build.py). */
#include <stdint.h>
#include <string.h>

/* cdef begin */
struct slot_array { uint8_t *data; int64_t width; int64_t at; };
void pack_slots(int64_t n, const int64_t *slots, int64_t k, const struct slot_array *arrays, uint8_t *records,
                int64_t size);
void unpack_slots(int64_t n, const uint8_t *records, int64_t size, int64_t k, const struct slot_array *arrays,
                  const int64_t *slots);
struct slot_rings { const int64_t *ev; int32_t *blocks; struct pool *recent; };
int64_t pack_sleepers(int64_t n, const int64_t *slots, int64_t k, const struct slot_array *arrays, uint8_t *records,
                      int64_t size, struct slot_rings r, int64_t *segs, int64_t *held, uint8_t *probed);
void restore_rings(int64_t n, const int64_t *slots, struct slot_rings r, const int64_t *segs);
enum { SQUEEZED_ROW = 8 /* words a row of squeezed dormant records */ };
int64_t squeeze_records(int64_t n, const uint8_t *records, int64_t words, const uint64_t *usual, uint64_t *out,
                        int64_t *rows);
void expand_records(int64_t n, const uint64_t *squeezed, const int64_t *at, int64_t words, const uint64_t *usual,
                    uint8_t *records);
struct row_layout {
    int64_t size, head, none;
    int64_t end_ns, last_frame, history, history_len, state, prev_state, isn, syn, synack, synack_after_ack,
        handshake_ack_frame, fin_frame, first_payload_frame, probes_n, stream_bytes, unacked_bytes;
    int64_t pairs, pair_at[8], pair_column[8];
    int64_t last_ns_column, last_frame_column, first_seq_column, max_end_column, max_ack_column;
};
struct slot_rows { const uint8_t *data; int64_t stride; };
void conn_rows(int64_t n, const struct row_layout *layout, const int64_t *slots, struct slot_rows table,
               struct slot_rows ev, struct slot_rows history, struct slot_rows ident, uint8_t *out);
/* cdef end */

/* Record i (``size`` bytes) gets row slots[i] of each array (``width`` bytes a row) at the array's ``at``. */
void pack_slots(int64_t n, const int64_t *slots, int64_t k, const struct slot_array *arrays, uint8_t *records,
                int64_t size) {
    for (int64_t i = 0; i < n; i++)
        for (int64_t c = 0; c < k; c++)
            memcpy(records + i * size + arrays[c].at, arrays[c].data + slots[i] * arrays[c].width, arrays[c].width);
}

/* The reverse: row slots[i] of each array from record i (the records as expanded from their squeezed rows,
 * in order). */
void unpack_slots(int64_t n, const uint8_t *records, int64_t size, int64_t k, const struct slot_array *arrays,
                  const int64_t *slots) {
    for (int64_t i = 0; i < n; i++)
        for (int64_t c = 0; c < k; c++)
            memcpy(arrays[c].data + slots[i] * arrays[c].width, records + i * size + arrays[c].at, arrays[c].width);
}

/* Of a side's recent ring, the blocks that hold the segments it counts (``count``: its EV_RECENT_N); the
 * rule of dormant.py's _held, which finds these blocks' segments in the files. */
static int64_t held_blocks(int64_t count) {
    if (count > RING) count = RING;
    return (count + BLOCK - 1) / BLOCK;
}

/* Connections going dormant (dormant.py): the records of the slots (as pack_slots), and the recent
 * segments their rings count, each side's held blocks in order (zeros for a block not there), copied one
 * block after the other into ``segs`` (what restore_rings puts back); per slot, ``held``: its blocks
 * copied, ``probed``: whether it counts keepalive probes.  Returns the blocks copied. */
int64_t pack_sleepers(int64_t n, const int64_t *slots, int64_t k, const struct slot_array *arrays, uint8_t *records,
                      int64_t size, struct slot_rings r, int64_t *segs, int64_t *held, uint8_t *probed) {
    pack_slots(n, slots, k, arrays, records, size);
    int64_t out = 0;
    for (int64_t i = 0; i < n; i++) {
        const int64_t *e = r.ev + slots[i] * EV_WIDTH;
        const int32_t *blk = r.blocks + slots[i] * 2 * BLOCKS;
        held[i] = 0;
        for (int64_t s = 0; s < 2; s++)
            for (int64_t b = 0; b < held_blocks(e[EV_RECENT_N + s]); b++, held[i]++, out++) {
                int64_t *to = segs + out * BLOCK * SEG;
                if (blk[s * BLOCKS + b] >= 0)
                    memcpy(to, r.recent->data + (int64_t)blk[s * BLOCKS + b] * BLOCK * SEG, BLOCK * SEG * 8);
                else
                    memset(to, 0, BLOCK * SEG * 8);
            }
        probed[i] = e[EV_PROBE_N] != 0 || e[EV_PROBE_N + 1] != 0;
    }
    return out;
}

/* The reverse, once the records are back in the slots (their EV_RECENT_N with them): blocks from the pool
 * (which has enough free ones) for the segments each side counts, filled from ``segs`` in order; the
 * other blocks of the slots none. */
void restore_rings(int64_t n, const int64_t *slots, struct slot_rings r, const int64_t *segs) {
    for (int64_t i = 0; i < n; i++) {
        const int64_t *e = r.ev + slots[i] * EV_WIDTH;
        int32_t *blk = r.blocks + slots[i] * 2 * BLOCKS;
        for (int64_t s = 0; s < 2; s++) {
            int64_t count = held_blocks(e[EV_RECENT_N + s]);
            for (int64_t b = 0; b < BLOCKS; b++) {
                if (b >= count) {
                    blk[s * BLOCKS + b] = -1;
                    continue;
                }
                int32_t block = take_block(r.recent);
                blk[s * BLOCKS + b] = block;
                memcpy(r.recent->data + (int64_t)block * BLOCK * SEG, segs, BLOCK * SEG * 8);
                segs += BLOCK * SEG;
            }
        }
    }
}

/* Dormant records squeezed (dormant.py): of a record's ``words`` 8-byte words, only those that differ from
 * ``usual`` (the values most records hold) are kept, after a bitmap of which they are.  On a SYN flood a
 * record of 154 words keeps 42 on average: most of a slot is defaults its connection never changed.  Squeezed
 * records are rows of SQUEEZED_ROW words, each record whole rows (the last one padded with zeros);
 * ``rows[i]``: record i's.  Returns the rows written (at most n * squeezed_rows_max(words)). */
static int64_t bitmap_words(int64_t words) { return (words + 63) / 64; }

int64_t squeeze_records(int64_t n, const uint8_t *records, int64_t words, const uint64_t *usual, uint64_t *out,
                        int64_t *rows) {
    int64_t written = 0, mask = bitmap_words(words);
    for (int64_t i = 0; i < n; i++) {
        const uint8_t *record = records + i * words * 8;
        uint64_t *to = out + written * SQUEEZED_ROW;
        int64_t kept = mask;
        memset(to, 0, mask * 8);
        for (int64_t w = 0; w < words; w++) {
            uint64_t v;
            memcpy(&v, record + 8 * w, 8);  /* records are bytes: their words are not aligned */
            if (v != usual[w]) {
                to[w / 64] |= (uint64_t)1 << (w % 64);
                to[kept++] = v;
            }
        }
        rows[i] = (kept + SQUEEZED_ROW - 1) / SQUEEZED_ROW;
        memset(to + kept, 0, (rows[i] * SQUEEZED_ROW - kept) * 8);
        written += rows[i];
    }
    return written;
}

/* The reverse: record i from the rows of ``squeezed`` that start at row at[i] (as read: in pages, not
 * gathered). */
void expand_records(int64_t n, const uint64_t *squeezed, const int64_t *at, int64_t words, const uint64_t *usual,
                    uint8_t *records) {
    int64_t mask = bitmap_words(words);
    for (int64_t i = 0; i < n; i++) {
        const uint64_t *from = squeezed + at[i] * SQUEEZED_ROW, *kept = from + mask;
        uint8_t *record = records + i * words * 8;
        memcpy(record, usual, words * 8);
        for (int64_t m = 0; m < mask; m++)
            for (uint64_t bits = from[m]; bits; bits &= bits - 1) {
                int64_t w = m * 64 + __builtin_ctzll(bits);
                memcpy(record + 8 * w, kept++, 8);
            }
    }
}

static int64_t load(const uint8_t *row, int64_t column) {
    int64_t v;
    memcpy(&v, row + 8 * column, 8);  /* a dormant record's fields are not aligned */
    return v;
}

static void store(uint8_t *row, int64_t at, int64_t v) { memcpy(row + at, &v, 8); }

static void store_ev(uint8_t *row, int64_t at, const uint8_t *e, int64_t first, int64_t count) {
    for (int64_t j = 0; j < count; j++) store(row, at + 8 * j, load(e, first + j));
}

/* The connection rows (rows.CONN_ROW, ``layout`` gives where each field is) of the connections whose
 * state is row slots[i] of the four arrays (the sequence pass's table, the event loop's columns and
 * history codes, who the connection is): tracker.py's ``_rows`` says what each field is.  ``out`` is
 * zeros; the fields not written here (the table spans) stay so. */
void conn_rows(int64_t n, const struct row_layout *L, const int64_t *slots, struct slot_rows table,
               struct slot_rows ev, struct slot_rows history, struct slot_rows ident, uint8_t *out) {
    for (int64_t i = 0; i < n; i++) {
        const uint8_t *t = table.data + slots[i] * table.stride, *e = ev.data + slots[i] * ev.stride;
        const int8_t *h = (const int8_t *)(history.data + slots[i] * history.stride);
        uint8_t *row = out + i * L->size;
        memcpy(row, ident.data + slots[i] * ident.stride, L->head);
        store(row, L->end_ns, load(t, L->last_ns_column));
        store(row, L->last_frame, load(t, L->last_frame_column));
        int64_t hlen = load(e, EV_HLEN);
        /* Past its length, a slot's history holds what an earlier connection of the slot left: zeros. */
        for (int64_t j = 0; j < HISTORY_MAX; j++) row[L->history + j] = j < hlen ? (uint8_t)h[j] : 0;
        store(row, L->history_len, hlen);
        for (int64_t s = 0; s < 2; s++) {
            row[L->state + s] = (uint8_t)(int8_t)load(e, EV_STATE + s);
            row[L->prev_state + s] = (uint8_t)(int8_t)load(e, EV_PREV + s);
        }
        store_ev(row, L->isn, e, EV_ISN, 2);
        store_ev(row, L->syn, e, EV_SYN_N, 3);
        store_ev(row, L->synack, e, EV_SA_N, 3);
        store_ev(row, L->synack_after_ack, e, EV_SAA_N, 3);
        store_ev(row, L->handshake_ack_frame, e, EV_HS_ACK, 1);
        store_ev(row, L->fin_frame, e, EV_FIN, 2);
        store_ev(row, L->first_payload_frame, e, EV_PAYLOAD, 2);
        store_ev(row, L->probes_n, e, EV_PROBE_N, 2);
        for (int64_t k = 0; k < L->pairs; k++) {
            store(row, L->pair_at[k], load(t, L->pair_column[k]));
            store(row, L->pair_at[k] + 8, load(t, L->pair_column[k] + 1));
        }
        for (int64_t s = 0; s < 2; s++) {
            int64_t first = load(t, L->first_seq_column + s), end = load(t, L->max_end_column + s);
            int64_t peer_ack = load(t, L->max_ack_column + 1 - s);
            int known = first != L->none && end != L->none;
            int64_t syn_fin = (load(e, EV_ISN + s) >= 0) + (load(e, EV_FIN + s) >= 0);
            int64_t stream = end - first - syn_fin, unacked = end - peer_ack;
            store(row, L->stream_bytes + 8 * s, known ? (stream > 0 ? stream : 0) : 0);
            store(row, L->unacked_bytes + 8 * s, known && peer_ack != L->none ? (unacked > 0 ? unacked : 0) : L->none);
        }
    }
}
