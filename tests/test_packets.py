"""The packet table's helpers: addresses, endpoints, flags."""

from __future__ import annotations

import pytest

from rstscope import packets as P


@pytest.mark.parametrize("text", ["10.0.0.1", "255.255.255.255", "2001:db8::1", "::1", "fe80::1:2"])
def test_address_round_trip(text):
    assert P.format_addr(*P.parse_addr(text)) == text


def test_ipv4_is_stored_mapped():
    hi, lo = P.parse_addr("10.0.0.1")
    assert hi == 0 and lo == 0xFFFF_0A00_0001


def test_endpoint_and_flags():
    assert P.format_endpoint(*P.parse_addr("2001:db8::2"), 443) == "[2001:db8::2]:443"
    assert P.flag_names(P.RST | P.ACK) == "RST,ACK" and P.flag_names(0) == "none"
    assert P.empty(3)["wscale"].tolist() == [-1, -1, -1]
