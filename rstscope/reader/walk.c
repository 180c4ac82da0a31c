/* The record walk of a classic pcap file (pcap.py ``_walk``): hop from record to record reading only
 * the caplen, and collect the record offsets.  This was the only per-record Python of the reader.
 * A bogus caplen is not checked here (pcap.py checks the batch and cuts it at the first bad record):
 * the bounds check alone keeps the walk inside the buffer.
 * The block between the cdef markers is also what cffi declares (_compiled_build.py). */
#include <stdint.h>

/* cdef begin */
int64_t pcap_walk(const uint8_t *buf, int64_t pos, int64_t end, int64_t limit, int64_t header_len,
                  int64_t caplen_offset, int big_endian, int64_t *offsets, int64_t *stopped_at);
/* cdef end */

static uint32_t walk_u32(const uint8_t *p, int big_endian) {
    return big_endian ? ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3]
                      : ((uint32_t)p[3] << 24) | ((uint32_t)p[2] << 16) | ((uint32_t)p[1] << 8) | p[0];
}

/* Offsets of up to ``limit`` complete records from ``pos`` (in ``offsets``); their count, and where
 * the walk stopped (``*stopped_at``). */
int64_t pcap_walk(const uint8_t *buf, int64_t pos, int64_t end, int64_t limit, int64_t header_len,
                  int64_t caplen_offset, int big_endian, int64_t *offsets, int64_t *stopped_at) {
    int64_t n = 0, last_header = end - header_len;
    while (n < limit && pos <= last_header) {
        int64_t after = pos + header_len + walk_u32(buf + pos + caplen_offset, big_endian);
        if (after > end) break;
        offsets[n++] = pos;
        pos = after;
    }
    *stopped_at = pos;
    return n;
}
