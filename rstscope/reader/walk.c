/* The record walks: the only per-record loops of the reader.
 *
 * pcap_walk, of a classic pcap file (pcap.py ``_walk``): hop from record to record reading only the
 * caplen, and collect the record offsets.  A bogus caplen is not checked here (pcap.py checks the
 * batch and cuts it at the first bad record): the bounds check alone keeps the walk inside the buffer.
 *
 * pcapng_walk, of a pcapng section (pcapng.py ``_walk``): hop over a run of well-formed enhanced packet
 * blocks and collect their offsets; stop at the first block that is anything else (another type, a
 * bad length, a trailing length that differs, a block past the buffer) and leave it to Python, which
 * decides what it is.  In Python this loop took 1.2 s of CPU per million packets (two unpack_from and
 * an append per block): pcapng is what dumpcap, Wireshark and editcap write.
 *
 * The block between the cdef markers is also what cffi declares (_compiled_build.py). */
#include <stdint.h>

/* cdef begin */
int64_t pcap_walk(const uint8_t *buf, int64_t pos, int64_t end, int64_t limit, int64_t header_len,
                  int64_t caplen_offset, int big_endian, int64_t *offsets, int64_t *stopped_at);
int64_t pcapng_walk(const uint8_t *buf, int64_t pos, int64_t end, int64_t limit, int big_endian,
                    int64_t max_block_len, int64_t *offsets, int64_t *stopped_at);
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

#define PCAPNG_EPB 6
#define PCAPNG_EPB_MIN 32 /* the block's fixed fields and its trailing length */

/* Offsets of up to ``limit`` enhanced packet blocks from ``pos`` that pcapng.py takes on its fast path
 * (the conditions are its own: 32 <= length <= max_block_len, a multiple of 4, whole in the buffer, the
 * trailing length equal to the leading one); their count, and where the walk stopped. */
int64_t pcapng_walk(const uint8_t *buf, int64_t pos, int64_t end, int64_t limit, int big_endian,
                    int64_t max_block_len, int64_t *offsets, int64_t *stopped_at) {
    int64_t n = 0;
    while (n < limit && pos + 12 <= end) {
        int64_t length = walk_u32(buf + pos + 4, big_endian), after = pos + length;
        if (walk_u32(buf + pos, big_endian) != PCAPNG_EPB || length < PCAPNG_EPB_MIN || length > max_block_len
            || (length & 3) || after > end || walk_u32(buf + after - 4, big_endian) != length)
            break;
        offsets[n++] = pos;
        pos = after;
    }
    *stopped_at = pos;
    return n;
}
