"""The reader's public surface: open_capture errors, chunking, single pass, byte-literal packets."""

from __future__ import annotations

import os
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest

from rstscope.packets import ACK, PACKET_DTYPE, PSH, RST, DecodeError
from rstscope.reader import Capture, open_capture, read_all
from rstscope.status import ExitStatus, InputError

FORMATS = Path(__file__).resolve().parents[1] / "captures" / "formats"


def pcap_bytes(*frames: bytes, linktype: int = 1, snaplen: int = 65535) -> bytes:
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, linktype)]
    for i, frame in enumerate(frames):
        out.append(struct.pack("<IIII", 1_700_000_000, i, len(frame), len(frame)) + frame)
    return b"".join(out)


# ---------------------------------------------------------------- open_capture errors: one line, InputError


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match=r"nope\.pcap: no such file$") as info:
        open_capture(tmp_path / "nope.pcap")
    assert info.value.exit_status == ExitStatus.BAD_INPUT


def test_directory(tmp_path):
    with pytest.raises(InputError, match="is a directory"):
        open_capture(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_permission_denied(tmp_path):
    path = tmp_path / "secret.pcap"
    path.write_bytes(pcap_bytes())
    path.chmod(0)
    with pytest.raises(InputError, match="permission denied"):
        open_capture(path)


def test_dev_zero_is_rejected_quickly():
    with pytest.raises(InputError, match="first bytes 00 00 00 00"):
        open_capture("/dev/zero")


def test_text_file(tmp_path):
    path = tmp_path / "page.html"
    path.write_text("<!doctype html>")
    with pytest.raises(InputError, match=r"not a pcap or pcapng file: first bytes 3c 21 64 6f$"):
        open_capture(path)


def test_gzip_detected_by_magic_not_name(tmp_path):
    path = tmp_path / "no-suffix"
    path.write_bytes((FORMATS / "pcap-le-us.pcap.gz").read_bytes())
    with open_capture(path) as capture:
        assert capture.compressed
        assert sum(len(t) for t in capture.chunks()) == 5


def test_gzip_of_garbage(tmp_path):
    import gzip

    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(b"hello world"))
    with pytest.raises(InputError, match=r"not a pcap or pcapng file \(inside gzip\): first bytes 68 65 6c 6c"):
        open_capture(path)


def test_header_only_file_has_no_rows(tmp_path):
    path = tmp_path / "header.pcap"
    path.write_bytes(pcap_bytes())
    table, stats = read_all(path)
    assert table.dtype == PACKET_DTYPE and len(table) == 0
    assert stats.records == 0 and stats.warnings == []


# ---------------------------------------------------------------- chunks


@pytest.mark.parametrize("chunk", [1, 2, 3, 1000])
def test_chunks_bounded_and_in_order(chunk):
    with open_capture(FORMATS / "pcap-le-us.pcap", chunk_packets=chunk) as capture:
        tables = list(capture.chunks())
    assert all(0 < len(t) <= chunk for t in tables)
    assert np.concatenate(tables)["frame"].tolist() == [1, 2, 3, 4, 5]


def test_chunks_is_single_pass():
    capture = open_capture(FORMATS / "pcap-le-us.pcap")
    assert isinstance(capture, Capture)
    list(capture.chunks())
    with pytest.raises(RuntimeError, match="only once"):
        list(capture.chunks())


def test_chunk_packets_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        open_capture(FORMATS / "pcap-le-us.pcap", chunk_packets=0)


def test_blocks_smaller_than_a_record(monkeypatch):
    # Records straddling every read-block boundary: the window must carry tails across refills.
    from rstscope.reader import source

    monkeypatch.setattr(source, "BLOCK_SIZE", 7)
    for name in ("pcap-le-us.pcap", "pcapng-multi.pcapng", "pcapng-multi.pcapng.gz"):
        small, _ = read_all(FORMATS / name)
        monkeypatch.undo()
        big, _ = read_all(FORMATS / name)
        monkeypatch.setattr(source, "BLOCK_SIZE", 7)
        assert small.tobytes() == big.tobytes(), name


# ---------------------------------------------------------------- byte literals


def test_rst_ack_over_ethernet():
    # 00:00:00.000000 IP 192.168.1.2.80 > 192.168.1.1.51234: Flags [R.], seq 1, ack 2, win 0, length 0
    frame = bytes.fromhex(
        "000000000001 000000000002 0800"
        "4500 0028 0000 4000 4006 0000 c0a80102 c0a80101"
        "0050 c822 00000001 00000002 5014 0000 0000 0000"
    )
    table, _stats = read_all_bytes(pcap_bytes(frame))
    (row,) = table
    assert (row["src_port"], row["dst_port"], row["seq"], row["ack"]) == (80, 51234, 1, 2)
    assert row["flags"] == RST | ACK
    assert (row["window"], row["payload_len"], row["ttl"], row["decode_error"]) == (0, 0, 64, DecodeError.NONE)


def test_ipv4_total_length_zero_is_tso():
    # Captured on the sender with TSO: IP total length 0, 2896 bytes of payload on the "wire".
    # 00:00:00.000000 IP 10.0.0.1.5001 > 10.0.0.2.80: Flags [P.], seq 1:2897, ack 1, win 502, length 2896
    header = bytes.fromhex(
        "000000000001 000000000002 0800"
        "4500 0000 0001 4000 4006 0000 0a000001 0a000002"
        "1389 0050 00000001 00000001 5018 01f6 0000 0000"
    )
    data = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 128, 1)
    data += struct.pack("<IIII", 0, 0, len(header), len(header) + 2896) + header
    table, _ = read_all_bytes(data)
    assert (table["payload_len"][0], table["payload_truncated"][0], table["flags"][0]) == (2896, True, PSH | ACK)


def test_ipv4_bad_ihl_is_a_decode_error():
    # IHL 4 (16 bytes) is impossible; protocol TCP: a row with IP_BAD_HEADER.
    frame = bytes.fromhex("000000000001 000000000002 0800 4400 0028 0000 4000 4006 0000 0a000001 0a000002") + bytes(20)
    table, stats = read_all_bytes(pcap_bytes(frame))
    assert table["decode_error"].tolist() == [DecodeError.IP_BAD_HEADER]
    assert stats.decode_errors == {"IP_BAD_HEADER": 1}


def test_tcp_data_offset_beyond_segment_is_a_decode_error():
    # data offset 15 words (60 bytes) in a 20-byte segment
    frame = bytes.fromhex(
        "000000000001 000000000002 0800"
        "4500 0028 0000 4000 4006 0000 0a000001 0a000002"
        "0050 c822 00000001 00000002 f010 0000 0000 0000"
    )
    table, _ = read_all_bytes(pcap_bytes(frame))
    assert table["decode_error"].tolist() == [DecodeError.TCP_BAD_OFFSET]
    assert table["src_port"].tolist() == [80]


def test_caplen_over_snaplen_is_read_and_warned_once():
    frame = bytes.fromhex(
        "000000000001 000000000002 0800"
        "4500 0028 0000 4000 4006 0000 0a000001 0a000002"
        "0050 c822 00000001 00000002 5010 0000 0000 0000"
    )
    table, stats = read_all_bytes(pcap_bytes(frame, frame, snaplen=40))
    assert len(table) == 2
    assert stats.warnings == ["record 1 @0x18: caplen 54 > snaplen 40; read anyway (warned once)"]


def read_all_bytes(data: bytes):
    """read_all on a capture given as bytes."""
    with tempfile.NamedTemporaryFile(suffix=".pcap") as f:
        f.write(data)
        f.flush()
        return read_all(f.name)
