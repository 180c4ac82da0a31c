/* Grouping a chunk's rows by 4-tuple (keys.py ``TupleTable.index``) in one pass: a hash table local to
 * the chunk maps each row's canonical key (A address hi/lo, B address hi/lo, ports, tunnel: six 64-bit
 * words) to its group, comparing whole keys (no collisions to check afterwards); then a counting sort
 * gives the order that groups the rows, groups in order of their first row, capture order inside each.
 * The 4-tuples alive across chunks are a second hash table (``struct tuple_index``): key -> tuple id,
 * ids of forgotten tuples handed out again, last forgotten first.
 * The block between the cdef markers is also what cffi declares (_kernel_build.py). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* cdef begin */
struct tuple_keys { const uint64_t *a_hi, *a_lo, *b_hi, *b_lo, *ports, *tunnel; };
int64_t tuple_groups(int64_t n, const struct tuple_keys *k, int64_t *order, uint8_t *start);
int64_t tuple_groups_of_rows(const uint8_t *rows, int64_t itemsize, int64_t n, const int64_t *offsets,
                             uint8_t *a_side, int64_t *order, uint8_t *start, uint64_t *group_keys);
void grouped_columns(const uint8_t *rows, int64_t itemsize, int64_t n, const int64_t *order, int64_t k,
                     const int64_t *offsets, const int64_t *widths, int64_t *out);
struct tuple_index;
struct tuple_index *tuple_index_new(void);
void tuple_index_free(struct tuple_index *t);
int64_t tuple_index_count(const struct tuple_index *t);
int64_t tuple_index_next(const struct tuple_index *t);
int64_t tuple_index_assign(struct tuple_index *t, int64_t groups, const uint64_t *keys, int64_t *tids,
                           int64_t *recycled);
int64_t tuple_index_forget(struct tuple_index *t, int64_t n, const int64_t *tids, const int64_t *cids,
                           int64_t *conn);
/* cdef end */

static uint64_t tk_mix(const struct tuple_keys *k, int64_t i) {
    uint64_t h = k->a_lo[i] * 0xC2B2AE3D27D4EB4FULL;
    h ^= k->b_lo[i] * 0xD6E8FEB86659FD93ULL + (h >> 27);
    h ^= k->ports[i] * 0xFF51AFD7ED558CCDULL + (h >> 33);
    h ^= k->tunnel[i] * 0x94D049BB133111EBULL + (h >> 30);
    h ^= k->a_hi[i] * 0x9E3779B97F4A7C15ULL + (h >> 29);
    h ^= k->b_hi[i] * 0x165667B19E3779F9ULL + (h >> 31);
    return h ^ (h >> 32);
}

static int tk_same(const struct tuple_keys *k, int64_t i, int64_t j) {
    return k->a_lo[i] == k->a_lo[j] && k->b_lo[i] == k->b_lo[j] && k->ports[i] == k->ports[j] &&
           k->a_hi[i] == k->a_hi[j] && k->b_hi[i] == k->b_hi[j] && k->tunnel[i] == k->tunnel[j];
}

/* ``order``: the rows grouped; ``start``: 1 where a group begins in that order.  Returns the number of
 * groups, or -1 if memory ran out. */
int64_t tuple_groups(int64_t n, const struct tuple_keys *k, int64_t *order, uint8_t *start) {
    int64_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    int64_t *table = malloc(cap * sizeof(int64_t)), *first = malloc((n + 1) * sizeof(int64_t));
    int64_t *at = malloc((n + 1) * sizeof(int64_t)), *group = malloc((n + 1) * sizeof(int64_t));
    if (!table || !first || !at || !group) {
        free(table); free(first); free(at); free(group);
        return -1;
    }
    for (int64_t i = 0; i < cap; i++) table[i] = -1;
    int64_t groups = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t slot = (int64_t)(tk_mix(k, i) & (uint64_t)(cap - 1)), g;
        while ((g = table[slot]) >= 0 && !tk_same(k, first[g], i)) slot = (slot + 1) & (cap - 1);
        if (g < 0) {
            g = table[slot] = groups++;
            first[g] = i;
            at[g] = 0;
        }
        group[i] = g;
        at[g]++;
    }
    int64_t pos = 0;
    for (int64_t g = 0; g < groups; g++) {  /* counts -> where each group begins */
        int64_t count = at[g];
        at[g] = pos;
        pos += count;
    }
    for (int64_t i = 0; i < n; i++) start[i] = 0;
    for (int64_t g = 0; g < groups; g++) start[at[g]] = 1;
    for (int64_t i = 0; i < n; i++) order[at[group[i]]++] = i;
    free(table); free(first); free(at); free(group);
    return groups;
}

static uint64_t field64(const uint8_t *row, int64_t at) {
    uint64_t v;
    memcpy(&v, row + at, 8);  /* the packet rows are packed: fields are not aligned */
    return v;
}

static uint64_t field16(const uint8_t *row, int64_t at) {
    uint16_t v;
    memcpy(&v, row + at, 2);
    return v;
}

/* The packet rows (``itemsize`` bytes each) grouped by canonical 4-tuple key, in one pass over them: the
 * endpoints ordered by address, then port (endpoint A is the lower; ``offsets``: where src_hi, src_lo,
 * dst_hi, dst_lo, src_port, dst_port and tunnel_id are in a row), the key being (A address, B address, A
 * port << 16 | B port, tunnel).  Writes ``order`` and ``start`` as tuple_groups does, ``a_side`` (in that
 * order: whether the row's sender is endpoint A) and each group's key (six words, groups in order).
 * Returns the number of groups, or -1 if memory ran out. */
int64_t tuple_groups_of_rows(const uint8_t *rows, int64_t itemsize, int64_t n, const int64_t *offsets,
                             uint8_t *a_side, int64_t *order, uint8_t *start, uint64_t *group_keys) {
    uint64_t *words = malloc((6 * n + 1) * sizeof(uint64_t));
    uint8_t *src_is_a = malloc(n + 1);
    if (!words || !src_is_a) {
        free(words); free(src_is_a);
        return -1;
    }
    struct tuple_keys k = {words, words + n, words + 2 * n, words + 3 * n, words + 4 * n, words + 5 * n};
    uint64_t *a_hi = words, *a_lo = words + n, *b_hi = words + 2 * n, *b_lo = words + 3 * n;
    uint64_t *ports = words + 4 * n, *tunnel = words + 5 * n;
    for (int64_t i = 0; i < n; i++) {
        const uint8_t *row = rows + i * itemsize;
        uint64_t s_hi = field64(row, offsets[0]), s_lo = field64(row, offsets[1]);
        uint64_t d_hi = field64(row, offsets[2]), d_lo = field64(row, offsets[3]);
        uint64_t s_p = field16(row, offsets[4]), d_p = field16(row, offsets[5]);
        int a = s_hi < d_hi || (s_hi == d_hi && (s_lo < d_lo || (s_lo == d_lo && s_p <= d_p)));
        src_is_a[i] = (uint8_t)a;
        a_hi[i] = a ? s_hi : d_hi;
        a_lo[i] = a ? s_lo : d_lo;
        b_hi[i] = a ? d_hi : s_hi;
        b_lo[i] = a ? d_lo : s_lo;
        ports[i] = a ? (s_p << 16) | d_p : (d_p << 16) | s_p;
        tunnel[i] = field64(row, offsets[6]);
    }
    int64_t groups = tuple_groups(n, &k, order, start);
    for (int64_t i = 0, g = 0; groups >= 0 && i < n; i++) {
        int64_t r = order[i];
        a_side[i] = src_is_a[r];
        if (start[i]) {  /* the group's first row, in capture order */
            uint64_t *key = group_keys + 6 * g++;
            key[0] = a_hi[r], key[1] = a_lo[r], key[2] = b_hi[r], key[3] = b_lo[r];
            key[4] = ports[r], key[5] = tunnel[r];
        }
    }
    free(words);
    free(src_is_a);
    return groups;
}

/* Columns of the grouped rows as int64: ``out[c * n + i]`` is field ``c`` (at ``offsets[c]``, an unsigned
 * little-endian integer of ``widths[c]`` bytes, or an int64) of row ``order[i]``.  One pass over the
 * rows instead of one strided gather per column. */
void grouped_columns(const uint8_t *rows, int64_t itemsize, int64_t n, const int64_t *order, int64_t k,
                     const int64_t *offsets, const int64_t *widths, int64_t *out) {
    for (int64_t i = 0; i < n; i++) {
        const uint8_t *row = rows + order[i] * itemsize;
        for (int64_t c = 0; c < k; c++) {
            const uint8_t *p = row + offsets[c];
            int64_t v;
            switch (widths[c]) {
            case 1: v = p[0]; break;
            case 2: { uint16_t x; memcpy(&x, p, 2); v = x; break; }
            case 4: { uint32_t x; memcpy(&x, p, 4); v = x; break; }
            default: memcpy(&v, p, 8); break;
            }
            out[c * n + i] = v;
        }
    }
}

/* ------------------------------------------------------------------ the 4-tuples alive */

#define KEY_WORDS 6

struct tuple_index {
    int64_t cap;       /* slots, a power of two, at least twice the keys held */
    int64_t count;     /* keys held */
    int64_t *slot;     /* tuple id per slot, -1: empty (linear probing, deletion by backward shift) */
    uint64_t *keys;    /* KEY_WORDS words per tuple id */
    int64_t keys_cap;  /* tuple ids ``keys`` has room for */
    int64_t next_tid;  /* tuple ids handed out so far */
    int64_t *free;     /* ids of forgotten tuples: a stack */
    int64_t n_free, free_cap;
};

static uint64_t ti_hash(const uint64_t *key) {
    uint64_t h = key[1] * 0xC2B2AE3D27D4EB4FULL;
    h ^= key[3] * 0xD6E8FEB86659FD93ULL + (h >> 27);
    h ^= key[4] * 0xFF51AFD7ED558CCDULL + (h >> 33);
    h ^= key[5] * 0x94D049BB133111EBULL + (h >> 30);
    h ^= key[0] * 0x9E3779B97F4A7C15ULL + (h >> 29);
    h ^= key[2] * 0x165667B19E3779F9ULL + (h >> 31);
    return h ^ (h >> 32);
}

struct tuple_index *tuple_index_new(void) {
    struct tuple_index *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->cap = 1024;
    t->slot = malloc(t->cap * sizeof(int64_t));
    if (!t->slot) {
        free(t);
        return NULL;
    }
    for (int64_t i = 0; i < t->cap; i++) t->slot[i] = -1;
    return t;
}

void tuple_index_free(struct tuple_index *t) {
    if (!t) return;
    free(t->slot); free(t->keys); free(t->free); free(t);
}

int64_t tuple_index_count(const struct tuple_index *t) { return t->count; }
int64_t tuple_index_next(const struct tuple_index *t) { return t->next_tid; }

static int64_t ti_find_slot(const struct tuple_index *t, const uint64_t *key) {
    int64_t mask = t->cap - 1, s = (int64_t)(ti_hash(key) & (uint64_t)mask), tid;
    while ((tid = t->slot[s]) >= 0 && memcmp(t->keys + tid * KEY_WORDS, key, KEY_WORDS * 8)) s = (s + 1) & mask;
    return s;
}

static int ti_grow(struct tuple_index *t) {
    int64_t cap = t->cap * 2, *slot = malloc(cap * sizeof(int64_t));
    if (!slot) return -1;
    for (int64_t i = 0; i < cap; i++) slot[i] = -1;
    for (int64_t i = 0; i < t->cap; i++) {
        int64_t tid = t->slot[i];
        if (tid < 0) continue;
        int64_t s = (int64_t)(ti_hash(t->keys + tid * KEY_WORDS) & (uint64_t)(cap - 1));
        while (slot[s] >= 0) s = (s + 1) & (cap - 1);
        slot[s] = tid;
    }
    free(t->slot);
    t->slot = slot;
    t->cap = cap;
    return 0;
}

/* Tuple ids of ``groups`` keys (``keys``: KEY_WORDS words each, in the order of
 * ``struct tuple_keys``), in order: a key not held gets a forgotten tuple's id (written to
 * ``recycled``) or a new one.  Returns the number of ids recycled, -1 if memory ran out. */
int64_t tuple_index_assign(struct tuple_index *t, int64_t groups, const uint64_t *keys, int64_t *tids,
                           int64_t *recycled) {
    int64_t n_recycled = 0;
    for (int64_t g = 0; g < groups; g++) {
        const uint64_t *key = keys + g * KEY_WORDS;
        int64_t s = ti_find_slot(t, key), tid = t->slot[s];
        if (tid < 0) {
            if (2 * (t->count + 1) > t->cap) {
                if (ti_grow(t) < 0) return -1;
                s = ti_find_slot(t, key);
            }
            if (t->n_free) {
                tid = t->free[--t->n_free];
                recycled[n_recycled++] = tid;
            } else {
                if (t->next_tid == t->keys_cap) {
                    int64_t cap = t->keys_cap ? 2 * t->keys_cap : 1024;
                    uint64_t *grown = realloc(t->keys, cap * KEY_WORDS * sizeof(uint64_t));
                    if (!grown) return -1;
                    t->keys = grown;
                    t->keys_cap = cap;
                }
                tid = t->next_tid++;
            }
            memcpy(t->keys + tid * KEY_WORDS, key, KEY_WORDS * 8);
            t->slot[s] = tid;
            t->count++;
        }
        tids[g] = tid;
    }
    return n_recycled;
}

static int ti_delete(struct tuple_index *t, int64_t tid) {
    if (tid < 0 || tid >= t->next_tid) return 0;
    int64_t mask = t->cap - 1, s = ti_find_slot(t, t->keys + tid * KEY_WORDS);
    if (t->slot[s] != tid) return 0;
    /* Backward shift: later entries of the probe run move into the hole unless their home slot lies
     * cyclically in (hole, their slot]. */
    int64_t hole = s;
    for (int64_t j = (s + 1) & mask; t->slot[j] >= 0; j = (j + 1) & mask) {
        int64_t home = (int64_t)(ti_hash(t->keys + t->slot[j] * KEY_WORDS) & (uint64_t)mask);
        if (((j - home) & mask) >= ((j - hole) & mask)) {
            t->slot[hole] = t->slot[j];
            hole = j;
        }
    }
    t->slot[hole] = -1;
    t->count--;
    return 1;
}

/* Forget tuple ``tid``: its key leaves the table, its id is handed out again.  Returns -1 if memory ran
 * out, -2 if the tuple was not held. */
static int ti_drop(struct tuple_index *t, int64_t tid) {
    if (t->n_free == t->free_cap) {
        int64_t cap = t->free_cap ? 2 * t->free_cap : 1024, *grown = realloc(t->free, cap * sizeof(int64_t));
        if (!grown) return -1;
        t->free = grown;
        t->free_cap = cap;
    }
    if (!ti_delete(t, tid)) return -2;
    t->free[t->n_free++] = tid;
    return 0;
}

/* Connections ``cids`` retired, ``tids`` their tuples: each tuple whose current connection (``conn``)
 * is the one retired is forgotten (``conn`` set to -1, its id to be handed out again), in order.
 * Returns the number forgotten, or ``ti_drop``'s error. */
int64_t tuple_index_forget(struct tuple_index *t, int64_t n, const int64_t *tids, const int64_t *cids,
                           int64_t *conn) {
    int64_t forgotten = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t tid = tids[i];
        if (conn[tid] != cids[i]) continue;
        int status = ti_drop(t, tid);
        if (status < 0) return status;
        conn[tid] = -1;
        forgotten++;
    }
    return forgotten;
}
