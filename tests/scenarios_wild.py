"""Resets from the wild (issue 8): middleboxes, forged and ignored RSTs, keepalive, other stacks.

Each scenario is the wire as a capture point between client and server shows it, with the other
devices' conventions where they matter: the server is one hop away (TTL 63 at the client's side),
a router or firewall on the path answers with its own initial TTL (64), Windows starts at 128,
BSD and Windows answer segments with RST|ACK.  Every scenario names the case of issue 8 it covers.
"""

from __future__ import annotations

from tests.scenarios import CLIENT, MSS, SERVER, Conversation, Scenario

ROUTER_TTL = 64
"""A Linux router's own packets at the client: sent with TTL 64, no hop taken."""


def _one_hop_away(**kwargs) -> Conversation:
    """Capture at the client; the server is one router away."""
    return Conversation(ttl=(64, 63), **kwargs)


def _request_response(c: Conversation, request: int = 200, response: int = 3 * MSS) -> None:
    c.data(CLIENT, request)
    c.ack(SERVER)
    c.data(SERVER, response)
    c.ack(CLIENT)


def firewall_reject_mid_connection() -> Scenario:
    """Issue 8: a firewall's `reject with tcp reset` on the connection's second request (was: abort).  The
    router answers the request from its own stack: a bare RST at the request's ack, with the router's TTL."""
    c = _one_hop_away()
    c.handshake()
    _request_response(c)
    c.data(CLIENT, 200, deliver=False)
    rst = c.send(SERVER, "R", seq=c.rcv[CLIENT], advance=False, ttl=ROUTER_TTL, ip_id=0)
    return Scenario(
        "firewall-reject",
        c.packets,
        {rst: "middlebox"},
        {rst: {"origin": "middlebox", "in_flight": None, "peer_in_flight": 200, "confidence": "medium"}},
    )


def firewall_reject_at_syn() -> Scenario:
    """Issue 8: a firewall rejects the SYN to one port of a host whose other port works (was: refused).  The
    host's SYN-ACKs on the working port show TTL 63; the reject comes with TTL 64."""
    works = _one_hop_away()
    works.handshake()
    _request_response(works)
    works.fin(SERVER)
    works.fin(CLIENT)
    blocked = _one_hop_away(client=("10.0.0.1", 40001), server=("10.0.0.2", 8443), t0=works.time + 1)
    blocked.syn()
    rst = blocked.send(SERVER, "RA", seq=0, ack=blocked.isn[0] + 1, advance=False, ttl=ROUTER_TTL, ip_id=0)
    packets = works.packets + blocked.packets
    frame = len(works.packets) + rst
    return Scenario("firewall-syn", packets, {frame: "middlebox"},
                    {frame: {"origin": "middlebox", "answers": "SYN"}})  # fmt: skip


def refused_by_the_host() -> Scenario:
    """The same host's closed port answers the SYN itself (TTL 63, like its SYN-ACKs elsewhere): refused,
    and the origin is confirmed by the host's packets on its other connection."""
    works = _one_hop_away()
    works.handshake()
    _request_response(works)
    closed = _one_hop_away(client=("10.0.0.1", 40001), server=("10.0.0.2", 9999), t0=works.time + 1)
    closed.syn()
    rst = closed.send(SERVER, "RA", seq=0, ack=closed.isn[0] + 1, advance=False, ip_id=0)
    frame = len(works.packets) + rst
    return Scenario("refused-by-host", works.packets + closed.packets, {frame: "refused"},
                    {frame: {"origin": "endpoint", "confidence": "high"}})  # fmt: skip


def conntrack_idle_timeout() -> Scenario:
    """Issue 8: the client idled past the router's conntrack timeout; its next request draws the router's RST
    as if from the server (was: abort, "the server aborted")."""
    c = _one_hop_away()
    c.handshake()
    _request_response(c)
    c.time += 12.0  # idle
    c.data(CLIENT, 200, deliver=False)
    rst = c.send(SERVER, "R", seq=c.rcv[CLIENT], advance=False, ttl=ROUTER_TTL, ip_id=0)
    return Scenario("conntrack-idle", c.packets, {rst: "middlebox"},
                    {rst: {"origin": "middlebox", "fix": "Send keepalives (TCP keepalive or application pings) more "
                           "often than the middlebox's idle timeout, or raise that timeout."}})  # fmt: skip


def injected_exact_reset() -> Scenario:
    """Issue 8: an injected RST|ACK at exactly the client's rcv_nxt, copying the server's TTL (was: abort).  The
    server never reset: 12 more of its segments arrive, and the client's kernel resets each (NO_SOCKET)."""
    c = _one_hop_away()
    c.handshake()
    c.data(CLIENT, 200)
    c.ack(SERVER)
    c.data(SERVER, 4 * MSS)
    c.ack(CLIENT)
    forged = c.send(SERVER, "RA", advance=False, ip_id=c.ip_id[SERVER] + 1)
    verdicts = {forged: "middlebox"}
    for _ in range(12):
        c.data(SERVER, MSS, deliver=False)
        verdicts[c.send(CLIENT, "R", advance=False, ip_id=0)] = "echo"  # at the segment's ack
    return Scenario("inject", c.packets, verdicts,
                    {forged: {"origin": "middlebox", "confidence": "high", "in_flight": None}})  # fmt: skip


def forged_far_outside_window() -> Scenario:
    """Issue 8: a forged RST 1,000,000 beyond the window, which the client ignored; the connection went on and
    closed with FINs (was: close-race with 1,000,000 bytes 'in flight', counted as lost)."""
    c = _one_hop_away()
    c.handshake()
    c.data(CLIENT, 200)
    c.ack(SERVER)
    c.data(SERVER, 2 * MSS)
    forged = c.send(SERVER, "RA", seq=c.nxt[SERVER] + 1_000_000, advance=False, ttl=ROUTER_TTL, ip_id=0)
    c.ack(CLIENT)
    c.data(SERVER, 2 * MSS)
    c.ack(CLIENT)
    c.fin(SERVER)
    c.fin(CLIENT)
    c.ack(SERVER)
    return Scenario("forged-out-of-window", c.packets, {forged: "ignored"},
                    {forged: {"in_flight": None, "origin": "middlebox"}, "lost_data": 0})  # fmt: skip


def forged_in_window_challenge_acked() -> Scenario:
    """Issue 8: an in-window but inexact forged RST; the client answers with a challenge ACK (RFC 5961) and the
    connection completes (was: echo)."""
    c = _one_hop_away()
    c.handshake()
    c.data(CLIENT, 200)
    c.ack(SERVER)
    c.data(SERVER, 2 * MSS)
    c.ack(CLIENT)
    forged = c.send(SERVER, "R", seq=c.nxt[SERVER] + 5000, advance=False, ttl=63, ip_id=0)
    c.ack(CLIENT)  # challenge ACK: the client's rcv_nxt again
    c.data(SERVER, MSS)
    c.ack(CLIENT)
    c.fin(SERVER)
    c.fin(CLIENT)
    c.ack(SERVER)
    return Scenario("forged-in-window", c.packets, {forged: "ignored"},
                    {forged: {"in_flight": None, "confidence": "high"}})  # fmt: skip


def reset_with_md5_option_dropped() -> Scenario:
    """Issue 8: a RST carrying a TCP-MD5 option (RFC 2385) that the peer dropped; the conversation went on
    (was: abort)."""
    c = _one_hop_away()
    c.handshake()
    _request_response(c)
    rst = c.send(SERVER, "RA", advance=False, options=[(19, b"\x00" * 16)])
    c.data(CLIENT, 100)
    c.ack(SERVER)
    c.data(SERVER, MSS)
    c.ack(CLIENT)
    return Scenario("md5-dropped", c.packets, {rst: "ignored"}, {rst: {"in_flight": None}})


def forged_reset_before_synack() -> Scenario:
    """Issue 8: a forged RST|ACK answers the SYN before the real SYN-ACK; the handshake then completes on the
    same ISN (was: refused)."""
    c = _one_hop_away()
    c.syn()
    forged = c.send(SERVER, "RA", seq=0, ack=c.isn[0] + 1, advance=False, ttl=ROUTER_TTL, ip_id=0)
    c.synack()
    c.ack(CLIENT)
    _request_response(c)
    return Scenario("forged-before-synack", c.packets, {forged: "ignored"}, {forged: {"origin": "middlebox"}})


def keepalive_timeout() -> Scenario:
    """Issue 8: the server's keepalive probes go unanswered (the router drops the client's direction), then the
    server resets (kernel TCP_KEEPALIVE_TIMEOUT): told apart from an abort."""
    c = Conversation()
    c.handshake()
    _request_response(c)
    c.time += 1.0
    for _ in range(2):
        c.send(SERVER, "A", seq=c.nxt[SERVER] - 1, advance=False)  # probe: one below snd_nxt, no payload
        c.time += 1.0
    rst = c.rst_ack(SERVER)
    return Scenario("keepalive", c.packets, {rst: "keepalive"},
                    {rst: {"keepalive_probes": 2, "origin": "endpoint", "confidence": "high"}})  # fmt: skip


def keepalive_timeout_seen_from_client() -> Scenario:
    """The same keepalive timeout captured at the client: the client answers every probe, but the router drops
    the answers, so the server probes again after KEEPINTVL and finally resets: still keepalive."""
    c = _one_hop_away()
    c.handshake()
    _request_response(c)
    c.time += 1.0
    for _ in range(2):
        c.send(SERVER, "A", seq=c.nxt[SERVER] - 1, advance=False)
        c.ack(CLIENT)  # lost on the way to the server
        c.time += 1.0
    rst = c.rst_ack(SERVER)
    return Scenario("keepalive-client-side", c.packets, {rst: "keepalive"}, {rst: {"keepalive_probes": 2}})


def probes_long_before_a_close_race() -> Scenario:
    """Keepalive probes during an idle spell, then more requests and responses, then a close race: the old
    probes say nothing about the later RST."""
    c = Conversation()
    c.handshake()
    _request_response(c)
    c.time += 1.0
    c.send(SERVER, "A", seq=c.nxt[SERVER] - 1, advance=False)
    c.ack(CLIENT)
    for _ in range(6):  # enough rows that the probe is long gone from the event rows
        _request_response(c, response=MSS)
    c.data(CLIENT, 24)
    c.ack(SERVER)
    c.data(SERVER, 3 * MSS, deliver=False)
    rst = c.rst_ack(SERVER)
    return Scenario("probes-then-close-race", c.packets, {rst: "close-race"}, {rst: {"keepalive_probes": 0}})


def shutdown_then_close_with_data_in_flight() -> Scenario:
    """Issue 8: shutdown(SHUT_WR), then close() with unread request bytes while ~150 kB of the response were
    unacknowledged (kernel TCP_ABORT_ON_CLOSE from FIN_WAIT1): the FIN goes first, then the RST|ACK."""
    c = Conversation()
    c.handshake()
    c.data(CLIENT, 24)
    c.ack(SERVER)
    c.data(SERVER, 110 * MSS, deliver=False)
    c.rcv[CLIENT] = c.isn[1] + 1 + 6 * MSS
    c.ack(CLIENT)
    c.fin(SERVER)
    rst = c.rst_ack(SERVER)
    return Scenario("shutdown-close", c.packets, {rst: "close-race"},
                    {rst: {"in_flight": 104 * MSS, "confidence": "high"}})  # fmt: skip


def shutdown_close_primary_lost() -> Scenario:
    """The same shutdown-then-close seen from the client when the server's RST|ACK was lost on the way (a busy
    shared queue): the client, missing data, keeps sending ACKs; the gone socket's listener answers them with
    bare RSTs.  The first of those stands for the unseen abort: data was in flight after the FIN."""
    c = Conversation()
    c.handshake()
    c.data(CLIENT, 24)
    c.ack(SERVER)
    c.data(SERVER, 10 * MSS, deliver=False)
    c.rcv[CLIENT] = c.isn[1] + 1 + 4 * MSS  # a segment was lost: the client acks only the first four
    c.ack(CLIENT)
    c.fin(SERVER)
    c.rcv[CLIENT] = c.isn[1] + 1 + 4 * MSS
    first = c.rst_reply(SERVER, c.rcv[CLIENT])
    c.ack(CLIENT)
    echo = c.rst_reply(SERVER, c.rcv[CLIENT])
    return Scenario("shutdown-close-primary-lost", c.packets, {first: "close-race", echo: "echo"},
                    {first: {"in_flight": 6 * MSS}, echo: {"primary": first}})  # fmt: skip


def reset_after_acknowledged_fin() -> Scenario:
    """Issue 8: a FIN that was acknowledged, then RST|ACK at snd_nxt (was: unknown, in_flight 1: the FIN's
    sequence number counted as data)."""
    c = Conversation()
    c.handshake()
    _request_response(c)
    c.fin(SERVER)
    c.ack(CLIENT)
    rst = c.rst_ack(SERVER)
    return Scenario("fin-acked-then-rst", c.packets, {rst: "abort"}, {rst: {"in_flight": 0}})


def late_data_with_fin() -> Scenario:
    """Issue 8: late data arriving in the same segment as the client's FIN, after the server's FIN (kernel
    TCP_ABORT_ON_DATA): late-data (was: echo with primary null)."""
    c = Conversation()
    c.handshake()
    _request_response(c)
    c.fin(SERVER)
    c.send(CLIENT, "FPA", payload=300)
    c.deliver(CLIENT)
    rst = c.send(SERVER, "R", seq=c.rcv[CLIENT], advance=False)  # bare reply at the late segment's ack
    return Scenario("late-data-with-fin", c.packets, {rst: "late-data"}, {rst: {"primary": None}})


def windows_reply_reset_with_ack() -> Scenario:
    """Issue 8: a Windows server (TTL 128) closed with FIN; the client's late data draws a reply RST|ACK
    (seq = the segment's ack, ack = its end), as BSD and Windows send them (was: abort)."""
    c = Conversation(ttl=(64, 127))
    c.handshake()
    _request_response(c)
    c.fin(SERVER)
    c.data(CLIENT, 100)
    rst = c.rst_ack(SERVER)
    return Scenario("windows-reply-rst-ack", c.packets, {rst: "late-data"},
                    {rst: {"origin": "endpoint", "in_flight": 0}})  # fmt: skip


def bsd_echo_with_ack() -> Scenario:
    """A BSD server aborts with data in flight; the client's later ACKs draw RST|ACK replies: echoes."""
    c = Conversation()
    c.handshake()
    c.data(CLIENT, 24)
    c.ack(SERVER)
    c.data(SERVER, 4 * MSS, deliver=False)
    c.rcv[CLIENT] = c.isn[1] + 1 + MSS
    c.ack(CLIENT)
    rst = c.rst_ack(SERVER)
    c.rcv[CLIENT] = c.isn[1] + 1 + 2 * MSS
    c.ack(CLIENT)
    echo = c.send(SERVER, "RA", seq=c.rcv[CLIENT], advance=False, ip_id=0)
    return Scenario("bsd-echo", c.packets, {rst: "close-race", echo: "echo"},
                    {rst: {"in_flight": 3 * MSS}, echo: {"primary": rst}})  # fmt: skip


def linux_firewall_before_windows_server() -> Scenario:
    """A Windows server (TTL 128, one hop: 127) behind a Linux firewall that rejects the second request with
    its own initial TTL 64: another stack's TTL, a middlebox with high confidence."""
    c = Conversation(ttl=(64, 127))
    c.handshake()
    _request_response(c)
    c.data(CLIENT, 200, deliver=False)
    rst = c.send(SERVER, "RA", seq=c.rcv[CLIENT], ack=c.nxt[CLIENT], advance=False, ttl=64, ip_id=0)
    return Scenario("windows-behind-linux-firewall", c.packets, {rst: "middlebox"},
                    {rst: {"origin": "middlebox", "confidence": "high"}})  # fmt: skip


def reset_with_diagnostic_text() -> Scenario:
    """RFC 1122: a RST may carry data (diagnostic text); it is not stream data and not in flight."""
    c = Conversation()
    c.handshake()
    _request_response(c)
    rst = c.send(SERVER, "RA", advance=False, load=b"connection reset by administrator")
    return Scenario("rst-with-text", c.packets, {rst: "abort"}, {rst: {"in_flight": 0, "origin": "endpoint"}})


def close_race_windows_client_side() -> Scenario:
    """The close race seen from a Windows client's side, server one hop away: the RST carries the server's TTL,
    so the origin is the server and the verdict keeps its high confidence."""
    c = Conversation(ttl=(128, 63))
    c.handshake()
    c.data(CLIENT, 24)
    c.ack(SERVER)
    c.data(SERVER, 3 * MSS, deliver=False)
    c.rcv[CLIENT] = c.isn[1] + 1 + MSS
    c.ack(CLIENT)
    rst = c.rst_ack(SERVER)
    return Scenario("close-race-windows-client", c.packets, {rst: "close-race"},
                    {rst: {"origin": "endpoint", "confidence": "high", "in_flight": 2 * MSS}})  # fmt: skip


def older_segments_after_the_reset() -> Scenario:
    """Two of the server's data segments show up after its RST (a tap merged late, or reordering on the path):
    nothing new in them, so the server did not go on after its reset; still its own close race."""
    c = Conversation()
    c.handshake()
    c.data(CLIENT, 24)
    c.ack(SERVER)
    start = c.nxt[SERVER]
    c.data(SERVER, 3 * MSS, deliver=False)
    rst = c.rst_ack(SERVER)
    for k in (1, 2):
        c.send(SERVER, "PA", seq=start + k * MSS, payload=MSS, advance=False)
    return Scenario("older-segments-after-rst", c.packets, {rst: "close-race"},
                    {rst: {"origin": "endpoint", "in_flight": 3 * MSS}})  # fmt: skip


def options_and_ttl_point_elsewhere() -> Scenario:
    """The server's segments all carry timestamps (Linux) and arrive with TTL 62 or 63 (its path changed once);
    an 'active' RST|ACK comes with TTL 64 and no options: one hop outside a varying range is too close to
    call alone, but Linux's own active resets carry timestamps: a middlebox, with medium confidence."""
    c = Conversation(ttl=(64, 63), options=[("Timestamp", (100, 0))])
    c.handshake()
    _request_response(c)
    c.ttl = (64, 62)
    _request_response(c)
    rst = c.send(SERVER, "RA", advance=False, ttl=64, ip_id=0, options=[], window=0)
    return Scenario("options-and-ttl", c.packets, {rst: "middlebox"},
                    {rst: {"origin": "middlebox", "confidence": "medium",
                           "origin_findings": ["origin.ttl_near_sender", "origin.options_differ",
                                               "origin.window_differs"]}})  # fmt: skip


def linux_active_reset_with_timestamps() -> Scenario:
    """Linux's own active RST|ACK carries the timestamps its segments carry, and the sender's TTL: endpoint."""
    c = Conversation(ttl=(64, 63), options=[("Timestamp", (100, 0))])
    c.handshake()
    _request_response(c)
    rst = c.rst_ack(SERVER)
    return Scenario("linux-active-rst", c.packets, {rst: "abort"},
                    {rst: {"origin": "endpoint", "origin_findings": ["origin.ttl_matches_sender"]}})  # fmt: skip


def lone_reset() -> Scenario:
    """A capture that holds one RST of a connection and nothing else (tcpdump's tcp_rst_data.pcap has such a
    RST, with diagnostic text): nothing says why, and the verdict says so."""
    c = Conversation()
    rst = c.send(SERVER, "RA", seq=77_000, ack=5_000, advance=False, load=b"No such connection")
    return Scenario("lone-reset", c.packets, {rst: "lone"}, {rst: {"confidence": "low", "origin": "undetermined"}})


def half_open_scan() -> Scenario:
    """A half-open scanner: its raw-socket SYN draws a SYN-ACK that the scanner host's own kernel resets
    (NO_SOCKET); the scanner later sends data anyway, which the server resets.  The first RST is the client
    host's, not a forgery, though 'the client' went on sending after it."""
    c = Conversation(isn=(0, 500_000))
    c.syn()
    c.synack()
    rst = c.send(CLIENT, "R", seq=1, advance=False, ip_id=0)
    c.time += 16.0
    c.data(CLIENT, 109, deliver=False)
    echo = c.send(SERVER, "R", advance=False, ip_id=0)
    return Scenario("half-open-scan", c.packets, {rst: "abort", echo: "echo"},
                    {rst: {"origin": "endpoint"}, echo: {"primary": rst}})  # fmt: skip


WILD = [
    options_and_ttl_point_elsewhere,
    linux_active_reset_with_timestamps,
    older_segments_after_the_reset,
    lone_reset,
    half_open_scan,
    firewall_reject_mid_connection,
    firewall_reject_at_syn,
    refused_by_the_host,
    conntrack_idle_timeout,
    injected_exact_reset,
    forged_far_outside_window,
    forged_in_window_challenge_acked,
    reset_with_md5_option_dropped,
    forged_reset_before_synack,
    keepalive_timeout,
    keepalive_timeout_seen_from_client,
    probes_long_before_a_close_race,
    shutdown_then_close_with_data_in_flight,
    shutdown_close_primary_lost,
    reset_after_acknowledged_fin,
    late_data_with_fin,
    windows_reply_reset_with_ack,
    bsd_echo_with_ack,
    linux_firewall_before_windows_server,
    reset_with_diagnostic_text,
    close_race_windows_client_side,
]
