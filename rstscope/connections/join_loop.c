/* Document rows joined from encoded pieces (columns.py): row i is literal 0, column 0's piece i, literal
 * 1, column 1's piece i, ..., literal k; rows are separated by ``sep``.  Each value is encoded once per
 * batch by orjson (a column at a time), so this loop only copies bytes: no per-row Python.
 * The block between the cdef markers is also what cffi declares (_kernel_build.py). */
#include <stdint.h>
#include <string.h>

/* cdef begin */
struct piece_column { const uint8_t *data; const int64_t *start, *length; int64_t stride; };
int64_t join_pieces(int64_t n, int64_t k, const struct piece_column *columns, const uint8_t *literals,
                    const int64_t *literal_end, const uint8_t *sep, int64_t sep_length, uint8_t *out,
                    int64_t *row_end);
int64_t value_spans(const uint8_t *json, int64_t size, int64_t room, int64_t *start, int64_t *length);
/* cdef end */

/* Writes the ``n`` rows to ``out`` (the caller sized it), each row's end offset to ``row_end``; returns
 * the bytes written.  ``literal_end`` holds the end offsets of the k + 1 literals in ``literals``. */
int64_t join_pieces(int64_t n, int64_t k, const struct piece_column *columns, const uint8_t *literals,
                    const int64_t *literal_end, const uint8_t *sep, int64_t sep_length, uint8_t *out,
                    int64_t *row_end) {
    uint8_t *p = out;
    for (int64_t i = 0; i < n; i++) {
        if (i) {
            memcpy(p, sep, sep_length);
            p += sep_length;
        }
        int64_t from = 0;
        for (int64_t c = 0; c <= k; c++) {
            memcpy(p, literals + from, literal_end[c] - from);
            p += literal_end[c] - from;
            from = literal_end[c];
            if (c == k) break;
            const struct piece_column *col = columns + c;
            int64_t at = i * col->stride, length = col->length[at];
            memcpy(p, col->data + col->start[at], length);
            p += length;
        }
        row_end[i] = p - out;
    }
    return p - out;
}

/* The values of a JSON array of numbers (nested arrays too, as orjson writes a numpy matrix): each run of
 * bytes other than ``,[]``, its start and length in order, at most ``room``.  Returns the number of
 * values, -1 if there are more than ``room``. */
int64_t value_spans(const uint8_t *json, int64_t size, int64_t room, int64_t *start, int64_t *length) {
    int64_t k = 0, i = 0;
    while (i < size) {
        uint8_t c = json[i];
        if (c == ',' || c == '[' || c == ']') {
            i++;
            continue;
        }
        if (k == room) return -1;
        int64_t from = i;
        while (i < size && (c = json[i]) != ',' && c != ']' && c != '[') i++;
        start[k] = from;
        length[k++] = i - from;
    }
    return k;
}
