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
int64_t delimited_rows(int64_t n, const uint8_t *data, const int64_t *start, const int64_t *length, int64_t k,
                       const uint8_t *keys, const int64_t *key_end, uint8_t separator, int csv, const uint8_t *prefix,
                       int64_t prefix_length, uint8_t *out, int64_t *row_end);
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

/* The end of the JSON value starting at ``v`` (before ``end``): a string (escapes skipped), a nested
 * array or object (strings inside skipped), or a scalar (up to the next ``,`` or ``}``). */
static const uint8_t *value_end(const uint8_t *v, const uint8_t *end) {
    if (*v == '"') {
        for (v++; v < end && *v != '"'; v++)
            if (*v == '\\') v++;
        return v + 1;
    }
    if (*v == '[' || *v == '{') {
        int64_t depth = 0;
        for (; v < end; v++) {
            if (*v == '"') {
                v = value_end(v, end) - 1;
            } else if (*v == '[' || *v == '{') {
                depth++;
            } else if ((*v == ']' || *v == '}') && --depth == 0) {
                return v + 1;
            }
        }
        return end;
    }
    while (v < end && *v != ',' && *v != '}') v++;
    return v;
}

/* Whether Python's ``str`` of the number orjson wrote as these ``m`` bytes prints the same bytes: an
 * integer; a float in plain notation within 1e-4 <= |x| < 1e16 or zero, where both print the shortest
 * digits that read back as the same float (outside it Python prints an exponent, orjson not always). */
static int python_prints_as_is(const uint8_t *x, int64_t m) {
    int64_t j = 0, digits = 0, zeros = 0, dot = -1, nonzero_fraction = 0;
    if (j < m && x[j] == '-') j++;
    for (; j < m; j++) {
        if (x[j] == '.') {
            if (dot >= 0) return 0;
            dot = j;
        } else if (x[j] < '0' || x[j] > '9') {
            return 0;  /* an exponent, true, false, a nested value */
        } else if (dot < 0) {
            digits++;
        } else if (x[j] == '0' && !nonzero_fraction) {
            zeros++;
        } else {
            nonzero_fraction = 1;
        }
    }
    if (digits == 0) return 0;
    if (dot < 0) return 1;
    int whole_zero = digits == 1 && x[dot - 1] == '0';
    if (!whole_zero) return digits <= 16;
    return !nonzero_fraction || zeros <= 3;
}

/* Lines of ``k`` fields of ``n`` encoded rows (JSON objects as orjson writes them: no spaces), each line
 * ``prefix`` then the fields in the order of ``keys`` (key c: the bytes ``keys[key_end[c - 1] ..
 * key_end[c])``) joined by ``separator``, each field as Python's ``str`` of its decoded value would print
 * it, None as nothing: an integer as written, a string without escapes as its bytes.  With ``csv``, as
 * Python's csv writer writes them (QUOTE_MINIMAL): a key missing is None, a string holding the separator
 * is quoted (one holding a quote or a line break is escaped in JSON, so not copied).  Any other value
 * (escapes, a fraction or exponent whose printing differs, true, false, arrays, a key missing without
 * ``csv``) stops the pass before that row: returns how many rows were written (``out`` large enough;
 * ``row_end``: each line's end in ``out``).  The caller writes that row by decoding it, and goes on from
 * the next. */
int64_t delimited_rows(int64_t n, const uint8_t *data, const int64_t *start, const int64_t *length, int64_t k,
                       const uint8_t *keys, const int64_t *key_end, uint8_t separator, int csv, const uint8_t *prefix,
                       int64_t prefix_length, uint8_t *out, int64_t *row_end) {
    const uint8_t *at[64];
    int64_t len[64];
    if (k > 64) return 0;
    uint8_t *p = out;
    for (int64_t i = 0; i < n; i++) {
        const uint8_t *v = data + start[i] + 1, *end = data + start[i] + length[i];  /* past the '{' */
        for (int64_t c = 0; c < k; c++) at[c] = NULL;
        while (v < end && *v == '"') {
            const uint8_t *key = v + 1, *key_stop = key;
            while (key_stop < end && *key_stop != '"') key_stop++;
            const uint8_t *val = key_stop + 2;  /* past '":' */
            const uint8_t *val_end = value_end(val, end);
            for (int64_t c = 0; c < k; c++) {
                int64_t from = c ? key_end[c - 1] : 0;
                if (key_stop - key == key_end[c] - from && !memcmp(key, keys + from, key_end[c] - from)) {
                    at[c] = val;
                    len[c] = val_end - val;
                    break;
                }
            }
            v = val_end + 1;  /* past ',' */
        }
        memcpy(p, prefix, prefix_length);
        p += prefix_length;
        for (int64_t c = 0; c < k; c++) {
            const uint8_t *x = at[c];
            int64_t m = len[c];
            if (c) *p++ = separator;
            if (x == NULL) {
                if (csv) continue;  /* None */
                return i;
            }
            if (*x == '"') {
                int quoted = 0;
                for (int64_t j = 1; j < m - 1; j++) {
                    if (x[j] == '\\') return i;
                    quoted |= csv && x[j] == separator;
                }
                if (quoted) *p++ = '"';
                memcpy(p, x + 1, m - 2);
                p += m - 2;
                if (quoted) *p++ = '"';
            } else if (m == 4 && !memcmp(x, "null", 4)) {
                /* None: nothing */
            } else {
                if (!python_prints_as_is(x, m)) return i;
                memcpy(p, x, m);
                p += m;
            }
        }
        *p++ = '\n';
        row_end[i] = p - out;
    }
    return n;
}
