/* Grouping a chunk's rows by 4-tuple (keys.py ``TupleTable.index``) in one pass: a hash table local to
 * the chunk maps each row's canonical key (A address hi/lo, B address hi/lo, ports, tunnel: six 64-bit
 * words) to its group, comparing whole keys (no collisions to check afterwards); then a counting sort
 * gives the order that groups the rows, groups in order of their first row, capture order inside each.
 * The block between the cdef markers is also what cffi declares (_kernel_build.py). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* cdef begin */
struct tuple_keys { const uint64_t *a_hi, *a_lo, *b_hi, *b_lo, *ports, *tunnel; };
int64_t tuple_groups(int64_t n, const struct tuple_keys *k, int64_t *order, uint8_t *start);
void grouped_columns(const uint8_t *rows, int64_t itemsize, int64_t n, const int64_t *order, int64_t k,
                     const int64_t *offsets, const int64_t *widths, int64_t *out);
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
