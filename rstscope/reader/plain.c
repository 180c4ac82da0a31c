/* The plain frames of a batch decoded in one pass: a link-layer header (Ethernet with up to four
 * 802.1Q/802.1ad tags, Linux cooked v1/v2, raw IP, BSD or OpenBSD loopback), an IPv4 header (options
 * allowed) or an IPv6 header without extension headers, then a whole TCP header and its options.
 * That is nearly every frame of a capture, and decode.py's column passes cost about 250 ns a frame
 * for it; this loop costs a tenth of that.
 *
 * A frame is plain only when decode.py would make it a row without a decode error and without
 * opening any layer it alone knows (tunnels, MPLS, PPPoE, FabricPath, fragments, IPv6 extension
 * headers, jumbograms).  Every other frame is marked ``slow`` and left to decode.py, which decodes
 * it and counts it as before: so this pass decides nothing that decode.py would decide differently,
 * and tests/reader/test_plain.py compares the two on every capture of the corpora.
 *
 * The block between the cdef markers is also what cffi declares (_compiled_build.py). */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* cdef begin */
int64_t decode_plain(const uint8_t *data, int64_t n, const int64_t *off, const int64_t *caplen,
                     const int64_t *wirelen, const int64_t *ts_ns, const uint64_t *frame,
                     const uint16_t *iface, uint16_t iface_all, const int8_t *layers, int8_t layer_all,
                     uint8_t *table, uint8_t *slow);
int64_t plain_row_layout(int64_t *offsets, int64_t limit);
/* cdef end */

/* One row of packets.PACKET_DTYPE (a packed record): plain_row_layout reports these offsets and
 * decode.py checks them against the dtype's at import. */
typedef struct __attribute__((packed)) {
    uint64_t frame;
    int64_t ts_ns;
    uint16_t iface;
    uint8_t ip_version;
    uint64_t src_hi, src_lo, dst_hi, dst_lo;
    uint16_t src_port, dst_port;
    uint32_t seq, ack;
    uint16_t flags, window;
    uint32_t payload_len;
    uint8_t tcp_header_len;
    uint16_t mss;
    int8_t wscale;
    uint8_t sack_permitted, sack_blocks, has_ts;
    uint32_t tsval, tsecr;
    uint8_t ttl;
    uint16_t ip_id;
    uint8_t tcp_auth;
    uint64_t tunnel_id;
    uint8_t payload_truncated, decode_error;
} packet_row;

/* The link layers, numbered as decode.py's _PLAIN_LAYERS lists them; -1: not decoded here. */
enum { ETHERNET, LINUX_SLL, LINUX_SLL2, RAW, IPV4, IPV6, NULL_LOOPBACK, OPENBSD_LOOP };

#define ETHERTYPE_IPV4 0x0800
#define ETHERTYPE_IPV6 0x86DD
#define MAX_VLAN_TAGS 4
#define IPPROTO_TCP 6
#define IPV4_MAPPED_LO 0x0000FFFF00000000ULL
#define MAX_OPTIONS 40 /* passes decode.py's option walk makes at most */

static inline uint32_t be16(const uint8_t *p) { return ((uint32_t)p[0] << 8) | p[1]; }
static inline uint32_t be32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline uint64_t be64(const uint8_t *p) { return ((uint64_t)be32(p) << 32) | be32(p + 4); }

static int is_vlan_tpid(uint32_t type) { return type == 0x8100 || type == 0x88A8 || type == 0x9100; }

/* The network header's offset and its EtherType (0 when the link layer shows none we decode). */
static int64_t link_layer(const uint8_t *data, int layer, int64_t off, int64_t end, uint32_t *ethertype) {
    int64_t l3 = off;
    *ethertype = 0;
    switch (layer) {
    case ETHERNET:
    case LINUX_SLL:
    case LINUX_SLL2: {
        int64_t type_at = layer == ETHERNET ? 12 : layer == LINUX_SLL ? 14 : 0;
        l3 = off + (layer == ETHERNET ? 14 : layer == LINUX_SLL ? 16 : 20);
        if (l3 > end) return l3;
        *ethertype = be16(data + off + type_at);
        for (int tag = 0; tag < MAX_VLAN_TAGS && is_vlan_tpid(*ethertype); tag++) {
            if (l3 + 4 > end) {
                *ethertype = 0;
                return l3;
            }
            *ethertype = be16(data + l3 + 2);
            l3 += 4;
        }
        return l3;
    }
    case RAW:
        if (off < end) *ethertype = data[off] >> 4 == 4 ? ETHERTYPE_IPV4 : data[off] >> 4 == 6 ? ETHERTYPE_IPV6 : 0;
        return off;
    case IPV4: *ethertype = ETHERTYPE_IPV4; return off;
    case IPV6: *ethertype = ETHERTYPE_IPV6; return off;
    case NULL_LOOPBACK:
    case OPENBSD_LOOP: {
        if (off + 4 > end) return off + 4;
        const uint8_t *w = data + off;
        int64_t family = -1;
        if (layer == OPENBSD_LOOP) family = be32(w);
        else if (w[1] == 0 && w[2] == 0 && w[3] == 0) family = w[0]; /* little-endian host */
        else if (w[0] == 0 && w[1] == 0 && w[2] == 0) family = w[3];
        if (family == 2) *ethertype = ETHERTYPE_IPV4;
        else if (family == 24 || family == 28 || family == 30) *ethertype = ETHERTYPE_IPV6; /* BSDs, macOS */
        return off + 4;
    }
    }
    return off;
}

/* The TCP options of a fully captured header (``p`` .. ``stop``), as decode.py's _decode_options
 * reads them: a malformed option ends the walk; the last of a kind wins. */
static void tcp_options(const uint8_t *data, int64_t p, int64_t stop, packet_row *row) {
    for (int pass = 0; pass < MAX_OPTIONS && p < stop; pass++) {
        uint8_t kind = data[p];
        if (kind == 1) { /* NOP */
            p += 1;
            continue;
        }
        if (kind == 0 || p + 2 > stop) return; /* EOL, or no room for a length */
        int64_t length = data[p + 1];
        if (length < 2 || p + length > stop) return;
        const uint8_t *v = data + p + 2;
        if (kind == 2 && length == 4) row->mss = (uint16_t)be16(v);
        else if (kind == 3 && length == 3) row->wscale = (int8_t)(v[0] < 127 ? v[0] : 127);
        else if (kind == 4) row->sack_permitted = 1;
        else if (kind == 5) row->sack_blocks = (uint8_t)((length - 2) / 8);
        else if (kind == 8 && length == 10) {
            row->has_ts = 1;
            row->tsval = be32(v);
            row->tsecr = be32(v + 4);
        } else if (kind == 19 || kind == 29) row->tcp_auth = kind;
        p += length;
    }
}

/* Row ``i`` of ``table`` for each plain frame; ``slow[i] = 1`` for every other one (its row is left
 * unwritten).  ``iface``/``layers`` per frame, or NULL for ``iface_all``/``layer_all``.  Returns the
 * number of plain frames. */
int64_t decode_plain(const uint8_t *data, int64_t n, const int64_t *off, const int64_t *caplen,
                     const int64_t *wirelen, const int64_t *ts_ns, const uint64_t *frame,
                     const uint16_t *iface, uint16_t iface_all, const int8_t *layers, int8_t layer_all,
                     uint8_t *table, uint8_t *slow) {
    int64_t plain = 0;
    for (int64_t i = 0; i < n; i++) {
        int layer = layers ? layers[i] : layer_all;
        int64_t start = off[i], end = start + caplen[i];
        int64_t on_wire_end = start + (wirelen[i] > caplen[i] ? wirelen[i] : caplen[i]);
        uint32_t ethertype;
        slow[i] = 1;
        if (layer < 0) continue;
        int64_t l3 = link_layer(data, layer, start, end, &ethertype);
        const uint8_t *ip = data + l3;
        packet_row row;
        memset(&row, 0, sizeof row);
        int64_t tcp, ip_payload;
        if (ethertype == ETHERTYPE_IPV4) {
            if (end - l3 < 20 || ip[0] >> 4 != 4) continue;
            int64_t ihl = (int64_t)(ip[0] & 0x0F) * 4, total = be16(ip + 2);
            uint32_t fragment = be16(ip + 6);
            if (ihl < 20 || end - l3 < ihl || (fragment & 0x3FFF) || ip[9] != IPPROTO_TCP) continue;
            /* The wire length bounds the IP length; 0 (TSO on the capturing host) means the wire's. */
            if (total == 0 || total > on_wire_end - l3) total = on_wire_end - l3;
            if (total < ihl) continue;
            row.ip_version = 4;
            row.src_lo = IPV4_MAPPED_LO | be32(ip + 12);
            row.dst_lo = IPV4_MAPPED_LO | be32(ip + 16);
            row.ttl = ip[8];
            row.ip_id = (uint16_t)be16(ip + 4);
            tcp = l3 + ihl;
            ip_payload = total - ihl;
        } else if (ethertype == ETHERTYPE_IPV6) {
            if (end - l3 < 40 || ip[0] >> 4 != 6 || ip[6] != IPPROTO_TCP) continue;
            int64_t payload = be16(ip + 4), on_wire = on_wire_end - l3 - 40;
            if (payload == 0 || payload > on_wire) payload = on_wire; /* BIG TCP, or cut by the wire */
            row.ip_version = 6;
            row.src_hi = be64(ip + 8);
            row.src_lo = be64(ip + 16);
            row.dst_hi = be64(ip + 24);
            row.dst_lo = be64(ip + 32);
            row.ttl = ip[7];
            tcp = l3 + 40;
            ip_payload = payload;
        } else {
            continue;
        }
        const uint8_t *h = data + tcp;
        int64_t have = end - tcp;
        if (have < 20) continue;
        int64_t header_len = (int64_t)(h[12] >> 4) * 4;
        if (header_len < 20 || header_len > ip_payload || have < header_len) continue;
        row.frame = frame[i];
        row.ts_ns = ts_ns[i];
        row.iface = iface ? iface[i] : iface_all;
        row.src_port = (uint16_t)be16(h);
        row.dst_port = (uint16_t)be16(h + 2);
        row.seq = be32(h + 4);
        row.ack = be32(h + 8);
        row.flags = (uint16_t)(be16(h + 12) & 0x1FF);
        row.window = (uint16_t)be16(h + 14);
        row.tcp_header_len = (uint8_t)header_len;
        row.payload_len = (uint32_t)(ip_payload - header_len);
        row.payload_truncated = have < ip_payload;
        row.wscale = -1;
        if (header_len > 20) tcp_options(data, tcp + 20, tcp + header_len, &row);
        memcpy(table + i * sizeof(packet_row), &row, sizeof row);
        slow[i] = 0;
        plain++;
    }
    return plain;
}

#define FIELD(name) offsetof(packet_row, name)

/* The byte offset of each field in declaration order, then the row's size (at most ``limit``
 * numbers); returns how many were written. */
int64_t plain_row_layout(int64_t *offsets, int64_t limit) {
    const int64_t layout[] = {
        FIELD(frame), FIELD(ts_ns), FIELD(iface), FIELD(ip_version), FIELD(src_hi), FIELD(src_lo),
        FIELD(dst_hi), FIELD(dst_lo), FIELD(src_port), FIELD(dst_port), FIELD(seq), FIELD(ack),
        FIELD(flags), FIELD(window), FIELD(payload_len), FIELD(tcp_header_len), FIELD(mss), FIELD(wscale),
        FIELD(sack_permitted), FIELD(sack_blocks), FIELD(has_ts), FIELD(tsval), FIELD(tsecr), FIELD(ttl),
        FIELD(ip_id), FIELD(tcp_auth), FIELD(tunnel_id), FIELD(payload_truncated), FIELD(decode_error),
        sizeof(packet_row)};
    int64_t count = (int64_t)(sizeof layout / sizeof layout[0]);
    if (count > limit) count = limit;
    memcpy(offsets, layout, (size_t)count * sizeof(int64_t));
    return count;
}
