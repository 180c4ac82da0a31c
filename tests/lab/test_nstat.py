"""nstat snapshots and deltas."""

from __future__ import annotations

import json

from rstscope.lab import nstat

JSON = json.dumps(
    {"kernel": {"TcpOutRsts": 10, "TcpExtListenOverflows": 0, "TcpExtTCPAbortOnClose": 3, "IpInReceives": 50}}
)
TEXT = """#kernel
TcpOutRsts                      14                 0.0
TcpExtListenOverflows           2                  0.0
TcpExtTCPAbortOnClose           23                 0.0
IpInReceives                    90                 0.0
"""


def test_parse_json_and_text_agree_on_names():
    before = nstat.parse(JSON)
    after = nstat.parse(TEXT)
    assert before["TcpOutRsts"] == 10 and after["TcpOutRsts"] == 14
    assert set(before) == set(after)


def test_delta_keeps_every_counter_of_interest_and_other_movers():
    result = nstat.delta(nstat.parse(JSON), nstat.parse(TEXT))
    counters = result["counters"]
    assert list(counters) == list(nstat.COUNTERS)
    assert counters["TcpExtListenOverflows"] == 2
    assert counters["TcpExtTCPAbortOnClose"] == 20
    assert counters["TcpExtEmbryonicRsts"] == 0  # absent means zero, recorded as a fact
    assert result["other"] == {"IpInReceives": 40}
