"""Scoring under the strict mapping: primary, echo, origin and client agreement, held-out runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from rstscope.lab import validate
from rstscope.lab.validate import Validation


def truth(verdict, reason, *, origin="endpoint", echo=False):
    return {"verdict": verdict, "reason": reason, "origin": origin, "echo": echo, "rule": reason}


def reset(frame, verdict, the_truth, *, connection=0, origin="endpoint"):
    return {"frame": frame, "verdict": verdict, "truth": the_truth, "connection": connection, "origin": origin,
            "kernel": None}  # fmt: skip


def score(resets, connections=()):
    result = Validation()
    validate.validate_doc({"resets": resets, "connections": list(connections)}, "run-1", result)
    return result


# --------------------------------------------------------------------------- per RST


@pytest.mark.parametrize(
    ("verdict", "the_truth", "agrees"),
    [
        # one verdict per truth: "close-race or abort" is gone
        ("close-race", truth("close-race", "TCP_ABORT_ON_CLOSE"), True),
        ("abort", truth("close-race", "TCP_ABORT_ON_CLOSE"), False),
        ("close-race", truth("abort", "TCP_ABORT_ON_CLOSE"), False),
        ("keepalive", truth("keepalive", "TCP_KEEPALIVE_TIMEOUT"), True),
        ("abort", truth("keepalive", "TCP_KEEPALIVE_TIMEOUT"), False),
        ("backlog", truth("backlog", "INVALID_SYN/LISTEN"), True),
        ("middlebox", truth("middlebox", "middlebox:nft reject-syn", origin="middlebox"), True),
        ("refused", truth("middlebox", "middlebox:nft reject-syn", origin="middlebox"), False),
        ("ignored", truth("ignored", "middlebox:forged", origin="middlebox"), True),
        ("echo", truth("ignored", "middlebox:forged", origin="middlebox"), False),
        # an analyzer that cannot decide never agrees, whatever the truth
        ("unknown", truth("stale", "NO_SOCKET"), False),
        ("unknown", truth("abort", "TCP_STATE"), False),
    ],
)
def test_primary_rst_agrees_only_with_its_one_verdict(verdict, the_truth, agrees):
    result = score([reset(1, verdict, the_truth)])
    assert (result.primary_agree, result.primary_total) == (int(agrees), 1)
    assert result.matrix == {(the_truth["reason"], verdict): 1}
    assert result.echo_total == 0


def test_echoes_are_scored_apart():
    resets = [
        reset(1, "close-race", truth("close-race", "TCP_ABORT_ON_CLOSE")),
        reset(2, "echo", truth("echo", "TCP_FLAGS/LISTEN", echo=True)),
        reset(3, "backlog", truth("echo", "TCP_FLAGS/LISTEN", echo=True)),
    ]
    result = score(resets)
    assert (result.primary_agree, result.primary_total) == (1, 1)
    assert (result.echo_agree, result.echo_total) == (1, 2)
    assert result.echo_matrix == {"echo": 1, "backlog": 1}
    [wrong] = [d for d in result.disagreements if d.kind != "origin"]
    assert (wrong.kind, wrong.frame, wrong.verdict) == ("echo", 3, "backlog")


def test_rsts_without_a_truth_are_not_scored():
    result = score([reset(1, "close-race", None)])
    assert (result.primary_total, result.echo_total, result.origin_total, result.unmatched) == (0, 0, 0, 1)


def test_origin_is_scored_and_undetermined_or_missing_never_agrees():
    mb = truth("middlebox", "middlebox:forged", origin="middlebox")
    resets = [
        reset(1, "middlebox", mb, origin="middlebox"),
        reset(2, "middlebox", mb, origin="undetermined", connection=1),
        reset(3, "middlebox", mb, origin=None, connection=2),
        reset(4, "close-race", mb, origin="endpoint", connection=3),
    ]
    result = score(resets)
    assert (result.origin_agree, result.origin_total) == (1, 4)
    assert result.origin_matrix[("middlebox", "undetermined")] == 1 and result.origin_matrix[("middlebox", "None")] == 1
    assert result.middlebox_misnamed == 1  # a middlebox's RST called close-race


# --------------------------------------------------------------------------- per connection


def connection(cid, outcome, read=10, expected=10):
    return {"id": cid, "client_outcome": outcome, "client_bytes_read": read, "client_bytes_expected": expected}


@pytest.mark.parametrize("outcome", ["ok", "ECONNRESET@read", "timeout", "EPIPE@write", "short-read"])
@pytest.mark.parametrize("verdict", ["unknown", "echo"])
def test_unknown_and_echo_only_connections_never_agree(verdict, outcome):
    result = score([reset(1, verdict, None)], [connection(0, outcome)])
    assert (result.client_agree, result.client_total) == (0, 1)


def test_stale_connection_agrees_only_with_a_client_that_saw_nothing_wrong():
    assert score([reset(1, "stale", None)], [connection(0, "ok")]).client_agree == 1
    assert score([reset(1, "stale", None)], [connection(0, "ECONNRESET@read")]).client_agree == 0


def test_abort_disagrees_when_the_client_read_less_than_the_server_sent():
    lost = score([reset(1, "abort", None)], [connection(0, "ECONNRESET@read", read=5, expected=9)])
    assert lost.client_agree == 0 and "nothing was at risk" in lost.disagreements[0].evidence
    whole = score([reset(1, "abort", None)], [connection(0, "ECONNRESET@read", read=9, expected=9)])
    assert whole.client_agree == 1


def test_close_race_after_the_senders_fin_may_leave_the_client_whole():
    """shutdown(SHUT_WR) then close(): the FIN left before the RST, so a client that read everything agrees;
    a close race without a FIN before it still needs the client to have seen the reset."""
    after_fin = {**reset(1, "close-race", None), "sender_fin_frame": 7}
    assert score([after_fin], [connection(0, "ok")]).client_agree == 1
    assert score([after_fin], [connection(0, "ECONNRESET@read")]).client_agree == 1
    assert score([reset(1, "close-race", None)], [connection(0, "ok")]).client_agree == 0


def test_connection_verdict_skips_echoes_and_ignored_resets():
    resets = [
        {"connection": 4, "verdict": "ignored"},
        {"connection": 4, "verdict": "echo"},
        {"connection": 4, "verdict": "middlebox"},
        {"connection": 5, "verdict": "ignored"},
        {"connection": 6, "verdict": "echo"},
    ]
    assert validate.connection_verdict(4, resets) == "middlebox"
    assert validate.connection_verdict(5, resets) == "ignored"
    assert validate.connection_verdict(6, resets) == "echo"
    assert validate.connection_verdict(7, resets) == "none"


def test_ignored_connection_agrees_with_a_completed_attempt_only():
    assert score([reset(1, "ignored", None)], [connection(0, "ok")]).client_agree == 1
    assert score([reset(1, "ignored", None)], [connection(0, "ECONNRESET@read")]).client_agree == 0


def test_held_out_runs_are_named_by_a_holdout_folder():
    assert validate.is_held_out(Path("captures/validation/holdout/20260101-inject"))
    assert not validate.is_held_out(Path("captures/validation/20260101-inject"))
