"""The agreement table, the confusion matrices and the listed disagreements."""

from __future__ import annotations

import pytest

from rstscope.lab import validate
from rstscope.lab.validate import Validation


@pytest.mark.parametrize(
    ("verdict", "reason", "state", "agrees"),
    [
        # close race and its echoes
        ("close-race", "TCP_ABORT_ON_CLOSE", "TCP_CLOSE", True),
        ("echo", "TCP_FLAGS", "TCP_LISTEN", True),
        ("close-race", "TCP_FLAGS", "TCP_LISTEN", False),
        # backlog with tcp_abort_on_overflow=1
        ("backlog", "INVALID_SYN", "TCP_LISTEN", True),
        ("echo", "INVALID_SYN", "TCP_LISTEN", False),
        # linger 0: on the wire a close race when data was in flight
        ("close-race", "TCP_STATE", "TCP_CLOSE", True),
        ("abort", "TCP_STATE", "TCP_CLOSE", True),
        # late data and refused
        ("late-data", "TCP_TIMEWAIT_SOCKET", "TCP_TIME_WAIT", True),
        ("refused", "NO_SOCKET", "UNKNOWN", True),
        ("backlog", "NO_SOCKET", "UNKNOWN", False),
        # an analyzer that cannot decide never agrees
        ("unknown", "TCP_ABORT_ON_CLOSE", "TCP_CLOSE", False),
        # reasons outside the table: sequence checks answer stale segments
        ("stale", "TCP_INVALID_ACK_SEQUENCE", "TCP_ESTABLISHED", True),
    ],
)
def test_verdict_agrees(verdict, reason, state, agrees):
    assert validate.verdict_agrees(verdict, {"reason": reason, "state": state}) is agrees


def test_no_record_is_neither_agreement_nor_disagreement():
    assert validate.verdict_agrees("close-race", None) is None


def doc_with(resets, connections):
    return {"resets": resets, "connections": connections}


def test_validate_doc_counts_matrix_and_lists_disagreements():
    k_close = {"reason": "TCP_ABORT_ON_CLOSE", "state": "TCP_CLOSE", "netns": "server", "time": 1.0}
    k_listen = {"reason": "TCP_FLAGS", "state": "TCP_LISTEN", "netns": "server", "time": 1.1, "listener": True}
    resets = [
        {"frame": 1, "verdict": "close-race", "kernel": k_close, "connection": 0},
        {"frame": 2, "verdict": "close-race", "kernel": k_listen, "connection": 0},  # wrong
        {"frame": 3, "verdict": "echo", "kernel": None, "connection": 0},
    ]
    connections = [
        {"id": 0, "client_outcome": "ECONNRESET@read", "client_bytes_read": 9, "client_bytes_expected": 20},
        {"id": 1, "client_outcome": "ECONNRESET@read", "client_bytes_read": 9, "client_bytes_expected": 20},
        {"id": 2, "client_outcome": None},
    ]
    result = Validation()
    validate.validate_doc(doc_with(resets, connections), "run-1", result)
    assert (result.kernel_agree, result.kernel_total, result.unmatched) == (1, 2, 1)
    assert result.matrix[("TCP_FLAGS/LISTEN", "close-race")] == 1
    # connection 1 has no RST in the capture but its client saw ECONNRESET
    assert (result.client_agree, result.client_total) == (1, 2)
    kinds = sorted((d.kind, d.frame, d.connection) for d in result.disagreements)
    assert kinds == [("client", None, 1), ("kernel", 2, 0)]
    kernel = next(d for d in result.to_json()["disagreements"] if d["kind"] == "kernel")
    assert kernel["truth"] == "TCP_FLAGS/LISTEN" and "state TCP_LISTEN" in kernel["evidence"]


def test_abort_verdict_disagrees_when_the_client_lost_bytes():
    resets = [{"frame": 1, "verdict": "abort", "kernel": None, "connection": 0}]
    lost = {"id": 0, "client_outcome": "ECONNRESET@read", "client_bytes_read": 5, "client_bytes_expected": 9}
    result = Validation()
    validate.validate_doc(doc_with(resets, [lost]), "r", result)
    assert result.client_agree == 0 and "nothing was at risk" in result.disagreements[0].evidence
    whole = dict(lost, client_bytes_read=9)
    result = Validation()
    validate.validate_doc(doc_with(resets, [whole]), "r", result)
    assert result.client_agree == 1


def test_connection_verdict_skips_echoes():
    resets = [{"connection": 4, "verdict": "echo"}, {"connection": 4, "verdict": "close-race"}]
    assert validate.connection_verdict(4, resets) == "close-race"
    assert validate.connection_verdict(5, resets) == "none"
