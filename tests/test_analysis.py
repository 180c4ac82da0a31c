"""Listen-queue evidence that needs no RST, and the API's records."""

from __future__ import annotations

from scapy.utils import wrpcap

from rstscope import api
from tests.scenarios import CLIENT, SERVER, Conversation


def _silent_overflow_packets():
    """tcp_abort_on_overflow=0: three attempts on one server, none reset.

    1. SYN retransmitted (SYN queue full), then served normally.
    2. SYN-ACK retransmitted after the client's ACK (accept queue dropped the ACK), data never acked.
    3. SYN never answered at all.
    """
    packets = []
    a = Conversation(client=("10.0.0.1", 40001))
    a.syn()
    a.time += 1
    a.syn()
    a.synack()
    a.ack(CLIENT)
    packets += a.packets
    b = Conversation(client=("10.0.0.1", 40002), t0=a.time)
    b.handshake()
    b.data(CLIENT, 24, deliver=False)
    b.time += 1
    b.send(SERVER, "SA", seq=b.isn[1], ack=b.isn[0] + 1)
    b.send(CLIENT, "A", seq=b.isn[0] + 1 + 24)
    packets += b.packets
    c = Conversation(client=("10.0.0.1", 40003), t0=b.time)
    c.syn()
    c.time += 1
    c.syn()
    packets += c.packets
    return packets


def test_listen_queue_without_resets(tmp_path):
    path = tmp_path / "silent.pcap"
    wrpcap(str(path), _silent_overflow_packets())
    doc = api.document(api.analyze(path))
    lq = doc["listen_queue"]
    assert doc["resets"] == []
    assert lq["syn_retransmitted"] == 2  # attempts 1 and 3
    assert lq["synack_after_ack"] == 1
    assert lq["unanswered"] == 1
    per_server = lq["per_capture"][0]["servers"]["10.0.0.2:8080"]
    assert per_server == {"attempts": 3, "syn_retransmitted": 2, "synack_retransmitted": 1, "synack_after_ack": 1,
                          "unanswered": 1}  # fmt: skip
    conn = doc["connections"][1]
    assert conn["unacked_bytes"]["client"] == 24 and conn["synack_after_ack"] == 1


def test_dataframes(tmp_path):
    from tests import scenarios

    path = tmp_path / "c.pcap"
    wrpcap(str(path), scenarios.close_race().packets)
    result = api.analyze(path)
    resets = api.resets_frame(result)
    conns = api.connections_frame(result)
    assert list(resets["verdict"]) == ["close-race", "echo", "echo", "echo"]
    assert conns.loc[0, "packets.server"] == 11  # SYN-ACK, ACK, 5 data, RST, 3 echoes
    assert conns.loc[0, "verdict"] == "close-race"
