/* Rows of the packet table (packets.PACKET_DTYPE, a packed record) written in one pass: the decoder
 * works on columns, and assigning each column to its field of the records touched every record once
 * per field (about 20 passes over a batch's table).  The block between the cdef markers is also what
 * cffi declares (_compiled_build.py). */
#include <stdint.h>
#include <string.h>

/* cdef begin */
void fill_records(uint8_t *table, int64_t itemsize, int64_t n, int64_t k, const int64_t *offsets,
                  const int64_t *widths, uint8_t **columns);
/* cdef end */

/* Field ``c`` of record ``i`` (at ``offsets[c]``, ``widths[c]`` bytes) = element ``i`` of ``columns[c]``
 * (a contiguous array of that field's type). */
void fill_records(uint8_t *table, int64_t itemsize, int64_t n, int64_t k, const int64_t *offsets,
                  const int64_t *widths, uint8_t **columns) {
    for (int64_t i = 0; i < n; i++) {
        uint8_t *row = table + i * itemsize;
        for (int64_t c = 0; c < k; c++) {
            switch (widths[c]) {
            case 1: row[offsets[c]] = columns[c][i]; break;
            case 2: memcpy(row + offsets[c], columns[c] + 2 * i, 2); break;
            case 4: memcpy(row + offsets[c], columns[c] + 4 * i, 4); break;
            default: memcpy(row + offsets[c], columns[c] + 8 * i, 8); break;
            }
        }
    }
}
