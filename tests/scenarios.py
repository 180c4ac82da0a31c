"""Deterministic TCP conversations built with scapy, each with its known truth.

A :class:`Conversation` keeps both sides' sequence state, so a scenario reads
like the packet trace it produces: ``c.syn(); c.synack(); c.ack(); ...``.
Every scenario returns its packets and the expected verdicts (and key numbers)
that ``tests/test_verdicts.py`` asserts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Raw

MSS = 1448
CLIENT, SERVER = 0, 1


@dataclass
class Conversation:
    client: tuple[str, int] = ("10.0.0.1", 40000)
    server: tuple[str, int] = ("10.0.0.2", 8080)
    isn: tuple[int, int] = (1_000, 500_000)
    t0: float = 1_700_000_000.0
    step: float = 0.001
    ttl: tuple[int, int] = (64, 64)
    """Per side, the TTL its packets show at the capture point (64 minus hops for Linux, 128 for Windows)."""
    options: list = field(default_factory=list)
    """TCP options on every segment unless a send names its own (e.g. timestamps, as Linux sends them)."""
    packets: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self.nxt = [self.isn[0], self.isn[1]]  # next sequence number per side
        self.rcv = [0, 0]  # what each side has received (its ack)
        self.time = self.t0
        self.ip_id = [1_000, 20_000]  # per-connection IP ID counters, as Linux keeps them

    # -- low level -----------------------------------------------------------------
    def send(self, side: int, flags: str, *, seq: int | None = None, ack: int | None = None, payload: int = 0,
             advance: bool = True, window: int = 65535, ttl: int | None = None, ip_id: int | None = None,
             options: list | None = None, load: bytes | None = None) -> int:  # fmt: skip
        """Append one segment from ``side``; returns its 1-based frame number.  ``ttl``/``ip_id`` default to
        the side's own (a packet another device forged or sent names them); ``load`` replaces the x bytes."""
        src, dst = (self.client, self.server) if side == CLIENT else (self.server, self.client)
        seq = self.nxt[side] if seq is None else seq
        if ack is None and "A" in flags:
            ack = self.rcv[side]
        ttl = self.ttl[side] if ttl is None else ttl
        if ip_id is None:
            ip_id = self.ip_id[side] = (self.ip_id[side] + 1) % 65536
        v6 = ":" in src[0]
        ip = IPv6(src=src[0], dst=dst[0], hlim=ttl) if v6 else IP(src=src[0], dst=dst[0], ttl=ttl, id=ip_id)
        tcp = TCP(sport=src[1], dport=dst[1], flags=flags, seq=seq % 2**32, ack=(ack or 0) % 2**32, window=window,
                  options=self.options if options is None else options)  # fmt: skip
        macs = ("02:00:00:00:00:01", "02:00:00:00:00:02")
        pkt = Ether(src=macs[side], dst=macs[1 - side]) / ip / tcp
        if load is not None:
            pkt = pkt / Raw(load)
            payload = len(load)
        elif payload:
            pkt = pkt / Raw(b"x" * payload)
        pkt.time = self.time
        self.time += self.step
        self.packets.append(pkt)
        if advance:
            consumed = payload + ("S" in flags) + ("F" in flags)
            end = seq + consumed
            if end > self.nxt[side]:
                self.nxt[side] = end
        return len(self.packets)

    def deliver(self, side: int) -> None:
        """The other side has received everything ``side`` sent (its next ack covers it)."""
        self.rcv[1 - side] = self.nxt[side]

    # -- readable steps --------------------------------------------------------------
    def handshake(self) -> None:
        self.syn()
        self.synack()
        self.ack(CLIENT)

    def syn(self) -> int:
        frame = self.send(CLIENT, "S", seq=self.isn[0])
        self.deliver(CLIENT)
        return frame

    def synack(self) -> int:
        frame = self.send(SERVER, "SA", seq=self.isn[1])
        self.deliver(SERVER)
        return frame

    def ack(self, side: int) -> int:
        return self.send(side, "A")

    def data(self, side: int, n: int, *, deliver: bool = True) -> list[int]:
        frames = []
        while n > 0:
            size = min(n, MSS)
            frames.append(self.send(side, "PA", payload=size))
            n -= size
        if deliver:
            self.deliver(side)
        return frames

    def fin(self, side: int) -> int:
        frame = self.send(side, "FA")
        self.deliver(side)
        return frame

    def rst_ack(self, side: int) -> int:
        """An active reset: RST|ACK at the side's snd_nxt, acking all it received."""
        return self.send(side, "RA", advance=False)

    def rst_reply(self, side: int, answered_ack: int) -> int:
        """A reply-RST to a segment that carried ``answered_ack``: bare RST, seq = that ack."""
        return self.send(side, "R", seq=answered_ack, advance=False)


@dataclass
class Scenario:
    name: str
    packets: list
    verdicts: dict[int, str]
    """frame -> expected verdict, for every RST in the capture."""
    expect: dict = field(default_factory=dict)
    """Other expected numbers: {frame: {field: value}} on reset evidence, or connection-level checks."""


def close_race() -> Scenario:
    """Server writes 5 segments, the client has acked 2 when the server aborts (server-side capture):
    3 segments in flight.  The client's later ACKs draw echo RSTs."""
    c = Conversation()
    c.handshake()
    c.data(CLIENT, 24)
    c.ack(SERVER)
    c.data(SERVER, 5 * MSS, deliver=False)
    c.rcv[CLIENT] = c.isn[1] + 1 + 2 * MSS
    c.ack(CLIENT)
    rst = c.rst_ack(SERVER)
    acks = []
    for k in (3, 4, 5):
        c.rcv[CLIENT] = c.isn[1] + 1 + k * MSS
        c.ack(CLIENT)
        acks.append(c.rst_reply(SERVER, c.rcv[CLIENT]))
    verdicts = {rst: "close-race", **{f: "echo" for f in acks}}
    expect = {rst: {"in_flight": 3 * MSS, "in_flight_basis": "capture", "sender": "server", "seq_vs_snd_nxt": 0},
              acks[0]: {"primary": rst}}  # fmt: skip
    return Scenario("close-race", c.packets, verdicts, expect)


def close_race_client_side() -> Scenario:
    """Seen from the client: it acked every segment as it arrived, then the RST came right behind them.
    The naive in-flight figure is 0; every one of those ACKs drew an echo, so the server had seen none
    of them when it reset: all 3 segments were in flight."""
    c = Conversation()
    c.handshake()
    c.data(CLIENT, 24)
    c.ack(SERVER)
    segs = c.data(SERVER, 3 * MSS, deliver=False)
    acks = []
    for k in range(1, len(segs) + 1):
        c.rcv[CLIENT] = c.isn[1] + 1 + k * MSS
        c.ack(CLIENT)
        acks.append(c.rcv[CLIENT])
    rst = c.rst_ack(SERVER)
    echoes = [c.rst_reply(SERVER, a) for a in acks]
    verdicts = {rst: "close-race", **{f: "echo" for f in echoes}}
    expect = {rst: {"in_flight": 3 * MSS, "in_flight_basis": "echoes", "in_flight_capture": 0, "echoes": 3}}
    return Scenario("close-race-client-side", c.packets, verdicts, expect)


def close_race_primary_lost() -> Scenario:
    """On a lossy link the server's RST|ACK never reached the capture point; the client, missing a
    segment, sends duplicate ACKs, and the gone socket's listener answers one with a bare RST at that
    ack.  Two segments were in flight: still a close race (kernel: TCP_ABORT_ON_CLOSE)."""
    c = Conversation()
    c.handshake()
    c.data(CLIENT, 24)
    c.ack(SERVER)
    c.data(SERVER, 3 * MSS, deliver=False)
    c.rcv[CLIENT] = c.isn[1] + 1 + MSS  # the second segment was lost: the client acks only the first
    c.ack(CLIENT)
    c.ack(CLIENT)  # duplicate ACK
    rst = c.rst_reply(SERVER, c.rcv[CLIENT])
    return Scenario("close-race-primary-lost", c.packets, {rst: "close-race"},
                    {rst: {"in_flight": 2 * MSS, "primary": None}})  # fmt: skip


def abort_idle() -> Scenario:
    """SO_LINGER 0 after the whole response was acknowledged: an abort with nothing in flight."""
    c = Conversation()
    c.handshake()
    c.data(CLIENT, 100)
    c.ack(SERVER)
    c.data(SERVER, 2 * MSS)
    c.ack(CLIENT)
    rst = c.rst_ack(SERVER)
    return Scenario("abort", c.packets, {rst: "abort"}, {rst: {"in_flight": 0}})


def abort_then_window_update() -> Scenario:
    """An idle abort; the client's later window update draws an echo.  The echo answers a segment sent
    after the RST, so it says nothing about what was in flight: still an abort."""
    c = Conversation()
    c.handshake()
    c.data(CLIENT, 100)
    c.data(SERVER, 2 * MSS)
    c.ack(CLIENT)
    rst = c.rst_ack(SERVER)
    c.ack(CLIENT)  # window update, same ack
    echo = c.rst_reply(SERVER, c.rcv[CLIENT])
    return Scenario("abort-window-update", c.packets, {rst: "abort", echo: "echo"}, {rst: {"in_flight": 0}})


def close_race_last_ack_echoed() -> Scenario:
    """As a lab run shows it from the client: every segment acked as it arrived, the RST right behind,
    and one echo for the very last ACK.  The ACK before it had reached the server: one segment in flight."""
    c = Conversation()
    c.handshake()
    c.data(CLIENT, 24)
    c.ack(SERVER)
    for _ in range(4):
        c.data(SERVER, MSS)
        c.ack(CLIENT)
    rst = c.rst_ack(SERVER)
    echo = c.rst_reply(SERVER, c.rcv[CLIENT])
    return Scenario("close-race-last-ack", c.packets, {rst: "close-race", echo: "echo"},
                    {rst: {"in_flight": MSS, "in_flight_basis": "echoes", "in_flight_capture": 0}})  # fmt: skip


def _bulk_transfer(c: Conversation, tail: int) -> None:
    """A request, then the server sending 8 whole segments and ``tail`` more bytes, acked by the client two
    segments at a time as the slow link delivers them; the last ACK covers everything sent."""
    c.handshake()
    c.data(CLIENT, 24)
    c.ack(SERVER)
    for _ in range(4):
        c.data(SERVER, 2 * MSS)
        c.ack(CLIENT)
    if tail:
        c.data(SERVER, tail)
        c.ack(CLIENT)


def close_race_unsent_tail() -> Scenario:
    """The server's close() with unread data (or SO_LINGER 0) cuts its transfer short while the rest of the
    response still sat in its send queue: everything it had sent is acknowledged, but its data ends on a
    whole segment and the RST comes right after the ACK of it (a lab close-race run showed this with 140 kB
    queued).  Kernel: TCP_ABORT_ON_CLOSE; the client reads less than the server wrote: a close race, the
    lost tail inferred (medium confidence)."""
    c = Conversation()
    _bulk_transfer(c, 0)
    rst = c.rst_ack(SERVER)
    return Scenario("close-race-unsent-tail", c.packets, {rst: "close-race"},
                    {rst: {"in_flight": 0, "confidence": "medium", "seq_vs_snd_nxt": 0}})  # fmt: skip


def abort_after_whole_response() -> Scenario:
    """Two connections that do not show a transfer cut short, both aborts: the same transfer ending on a
    partial segment (the whole response), acknowledged, then SO_LINGER 0; and a transfer of whole segments
    whose RST comes two seconds after the last ACK (the sender had stopped sending)."""
    c = Conversation()
    _bulk_transfer(c, 1000)  # steps of 2,896 bytes, then 1,000: no common segment size
    rst = c.rst_ack(SERVER)
    later = Conversation(client=("10.0.0.3", 40001), t0=c.time + 1)
    _bulk_transfer(later, 0)
    later.time += 2.0
    idle_rst = len(c.packets) + later.rst_ack(SERVER)
    return Scenario("abort-after-whole-response", c.packets + later.packets, {rst: "abort", idle_rst: "abort"},
                    {rst: {"in_flight": 0}, idle_rst: {"in_flight": 0}})  # fmt: skip


def backlog_abort_on_overflow() -> Scenario:
    """tcp_abort_on_overflow=1: SYN retransmitted, then the listener answers the handshake ACK with a
    bare RST at ISN+1."""
    c = Conversation()
    c.syn()
    c.time += 1.0
    c.syn()
    c.synack()
    ack = c.ack(CLIENT)
    rst = c.rst_reply(SERVER, c.isn[1] + 1)
    del ack
    return Scenario("backlog", c.packets, {rst: "backlog"}, {rst: {"syn_retransmissions": 1, "sender": "server"}})


def backlog_silent_then_reset() -> Scenario:
    """Silent accept-queue drop: SYN-ACK retransmitted after the client's ACK, client data never
    acknowledged, then a bare RST from the listener (TCP_FLAGS in LISTEN)."""
    c = Conversation()
    c.handshake()
    c.data(CLIENT, 24, deliver=False)
    c.time += 1.0
    c.send(SERVER, "SA", seq=c.isn[1], ack=c.isn[0] + 1)  # SYN-ACK retransmitted: the ACK was dropped
    c.send(CLIENT, "A", seq=c.isn[0] + 1 + 24)  # duplicate ACK
    c.send(CLIENT, "PA", seq=c.isn[0] + 1, payload=24)  # data retransmitted
    c.time += 2.0
    rst = c.rst_reply(SERVER, c.isn[1] + 1)
    return Scenario("backlog-silent", c.packets, {rst: "backlog"},
                    {rst: {"synack_after_ack": 1, "client_unacked": 24}})  # fmt: skip


def late_data() -> Scenario:
    """The server sent its response and FIN; the client keeps sending, the closed socket answers RST."""
    c = Conversation()
    c.handshake()
    c.data(CLIENT, 24)
    c.data(SERVER, MSS)
    fin = c.fin(SERVER)
    c.ack(CLIENT)
    c.data(CLIENT, 100, deliver=False)
    rst = c.rst_reply(SERVER, c.rcv[CLIENT])
    c.data(CLIENT, 100, deliver=False)
    echo = c.rst_reply(SERVER, c.rcv[CLIENT])
    return Scenario("late-data", c.packets, {rst: "late-data", echo: "echo"},
                    {rst: {"sender_fin_frame": fin}, echo: {"primary": rst}})  # fmt: skip


def late_data_crossing_fin() -> Scenario:
    """The client's last data and the server's FIN crossed: at the capture point the data comes first,
    but it reached the server after its close, and the closed socket answered it with RST."""
    c = Conversation()
    c.handshake()
    c.data(CLIENT, 24)
    c.data(SERVER, MSS)
    c.data(CLIENT, 100, deliver=False)  # sent before the FIN arrived; acks nothing past the response
    acked = c.rcv[CLIENT]
    fin = c.fin(SERVER)
    rst = c.rst_reply(SERVER, acked)
    return Scenario("late-data-crossing", c.packets, {rst: "late-data"}, {rst: {"sender_fin_frame": fin}})


def reset_after_both_fins() -> Scenario:
    """Both sides closed with FIN; the client's last ACK reaches a server that no longer has the
    connection, which answers it with RST: not a failure, the connection had ended."""
    c = Conversation()
    c.handshake()
    c.data(CLIENT, 24)
    c.data(SERVER, MSS)
    c.fin(SERVER)
    c.fin(CLIENT)
    rst = c.rst_reply(SERVER, c.rcv[CLIENT])
    return Scenario("after-both-fins", c.packets, {rst: "echo"}, {rst: {"primary": None}})


def client_cancelled_syn() -> Scenario:
    """The client resets its own connection attempt before any answer (Zeek's RSTOS0)."""
    c = Conversation()
    c.syn()
    rst = c.send(CLIENT, "R", seq=c.isn[0] + 1, advance=False)
    return Scenario("client-cancelled", c.packets, {rst: "abort"}, {rst: {"sender": "client"}})


def refused() -> Scenario:
    """Nothing listens: the SYN draws RST|ACK with seq 0 and ack = ISN+1."""
    c = Conversation()
    c.syn()
    rst = c.send(SERVER, "RA", seq=0, ack=c.isn[0] + 1, advance=False)
    return Scenario("refused", c.packets, {rst: "refused"})


def stale() -> Scenario:
    """The capture starts mid-connection; the server no longer knows it and answers data with RST."""
    c = Conversation(isn=(70_000, 90_000))
    c.rcv[CLIENT] = 90_500
    c.nxt[CLIENT] = 70_100
    c.data(CLIENT, 50, deliver=False)
    rst = c.rst_reply(SERVER, 90_500)
    return Scenario("stale", c.packets, {rst: "stale"})


def port_reuse() -> Scenario:
    """One 4-tuple, two connections: a clean one closed by FINs, then a new SYN (new ISN) refused."""
    c = Conversation()
    c.handshake()
    c.data(CLIENT, 10)
    c.data(SERVER, 10)
    c.fin(CLIENT)
    c.fin(SERVER)
    c.ack(CLIENT)
    c2 = Conversation(isn=(7_000_000, 9_000_000), t0=c.time + 1)
    c2.syn()
    rst = c2.send(SERVER, "RA", seq=0, ack=c2.isn[0] + 1, advance=False)
    offset = len(c.packets)
    return Scenario("port-reuse", c.packets + c2.packets, {rst + offset: "refused"},
                    {"connections": 2})  # fmt: skip


def wraparound_close_race() -> Scenario:
    """Sequence numbers wrap past 2**32 during the response; in-flight must still be 3 segments."""
    c = Conversation(isn=(2**32 - 700, 2**32 - 3_000))
    c.handshake()
    c.data(CLIENT, 24)
    c.ack(SERVER)
    c.data(SERVER, 6 * MSS, deliver=False)
    c.rcv[CLIENT] = c.isn[1] + 1 + 3 * MSS
    c.ack(CLIENT)
    rst = c.rst_ack(SERVER)
    return Scenario("wraparound", c.packets, {rst: "close-race"}, {rst: {"in_flight": 3 * MSS, "seq_vs_snd_nxt": 0}})


def retransmitted_data_close_race() -> Scenario:
    """A segment is retransmitted before the abort: counted as a retransmission, in-flight unchanged."""
    c = Conversation()
    c.handshake()
    c.data(CLIENT, 24)
    c.ack(SERVER)
    c.data(SERVER, 4 * MSS, deliver=False)
    c.send(SERVER, "PA", seq=c.isn[1] + 1 + 2 * MSS, payload=MSS)  # retransmission
    c.rcv[CLIENT] = c.isn[1] + 1 + 2 * MSS
    c.ack(CLIENT)
    rst = c.rst_ack(SERVER)
    return Scenario("retransmission", c.packets, {rst: "close-race"},
                    {rst: {"in_flight": 2 * MSS}, "server_retransmissions": 1})  # fmt: skip


def ipv6_close_race() -> Scenario:
    c = Conversation(client=("2001:db8::1", 40000), server=("2001:db8::2", 443))
    c.handshake()
    c.data(CLIENT, 24)
    c.data(SERVER, 2 * MSS, deliver=False)
    rst = c.rst_ack(SERVER)
    return Scenario("ipv6", c.packets, {rst: "close-race"}, {rst: {"in_flight": 2 * MSS, "src": "[2001:db8::2]:443"}})


def client_gave_up() -> Scenario:
    """The server's SYN-ACK arrives after the client gave up: the client answers it with RST."""
    c = Conversation()
    c.syn()
    c.time += 3
    c.synack()
    rst = c.send(CLIENT, "R", seq=c.isn[0] + 1, advance=False)
    return Scenario("client-gave-up", c.packets, {rst: "abort"})


def midstream_no_reset() -> Scenario:
    """Capture starts mid-connection (no handshake): originator inferred, no RST."""
    c = Conversation(client=("10.0.0.1", 51000), server=("10.0.0.2", 80))
    c.data(SERVER, 3 * MSS)
    c.ack(CLIENT)
    c.fin(SERVER)
    c.fin(CLIENT)
    return Scenario("midstream", c.packets, {}, {"originator_inferred": True})


def unknown_reset() -> Scenario:
    """A RST|ACK far behind the sender's snd_nxt that answers nothing: not enough evidence."""
    c = Conversation()
    c.handshake()
    c.data(SERVER, 3 * MSS)
    rst = c.send(SERVER, "RA", seq=c.isn[1] + 1, advance=False)
    return Scenario("unknown", c.packets, {rst: "unknown"})


ALL = [
    close_race, close_race_client_side, close_race_last_ack_echoed, close_race_primary_lost, abort_idle,
    abort_then_window_update, close_race_unsent_tail, abort_after_whole_response,
    backlog_abort_on_overflow, backlog_silent_then_reset,
    late_data, late_data_crossing_fin, reset_after_both_fins, client_cancelled_syn, refused, stale,
    port_reuse, wraparound_close_race, retransmitted_data_close_race,
    ipv6_close_race, client_gave_up, midstream_no_reset, unknown_reset,
]  # fmt: skip
