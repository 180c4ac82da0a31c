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
/* cdef end */

/* Record i (``size`` bytes) gets row slots[i] of each array (``width`` bytes a row) at the array's ``at``. */
void pack_slots(int64_t n, const int64_t *slots, int64_t k, const struct slot_array *arrays, uint8_t *records,
                int64_t size) {
    for (int64_t i = 0; i < n; i++)
        for (int64_t c = 0; c < k; c++)
            memcpy(records + i * size + arrays[c].at, arrays[c].data + slots[i] * arrays[c].width, arrays[c].width);
}

/* The reverse: row slots[i] of each array from record i. */
void unpack_slots(int64_t n, const uint8_t *records, int64_t size, int64_t k, const struct slot_array *arrays,
                  const int64_t *slots) {
    for (int64_t i = 0; i < n; i++)
        for (int64_t c = 0; c < k; c++)
            memcpy(arrays[c].data + slots[i] * arrays[c].width, records + i * size + arrays[c].at, arrays[c].width);
}
