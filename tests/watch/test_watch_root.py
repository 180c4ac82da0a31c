"""``rstscope watch`` on the client's interface of real lab runs (root, network namespaces).

The lab's close-race and backlog presets run as usual; a ``watch --json --kernel --metrics --ring``
runs beside the lab's own capture in the client namespace, its lines stamped with the time they were
printed (tests/watch/stamp.py).  Before watch is stopped, its metrics endpoint is scraped over HTTP
from inside the namespace.  Then: every primary RST was printed within 1 s of its capture time, the
verdicts are those of ``analyze`` on the same packets (watch's own ring file: the same stream, the same
frame numbers), the kernel reasons were joined (and equal the lab's own trace join), and the counters
scraped equal the lines printed.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from unittest import mock

import pytest

from rstscope.analysis import analyze_capture
from rstscope.lab import rundir, runner, scenarios
from rstscope.lab.scenarios import Action, Step, _in_ns
from rstscope.reset_table import NOT_PRIMARY
from tests.lab.conftest import root_skip_reason

pytestmark = [pytest.mark.root, pytest.mark.slow]

STAMP = Path(__file__).with_name("stamp.py")
METRICS_PORT = 19464
SMALL = {"close-race": {"loops": 6}, "backlog": {}}


def _with_watch(plan, out: Path):
    """``scenarios.plan`` with watch started after the lab's capture, scraped and stopped before it."""

    def planned(options, names, caps):
        steps = plan(options, names, caps)
        cli, py = names.client_ns, sys.executable
        watch = (
            f"{py} -m rstscope watch -i {names.client_dev} -f 'tcp port {options.port}' --json --kernel "
            f"--metrics 127.0.0.1:{METRICS_PORT} --ring {out / 'ring'} | {py} {STAMP} > {out / 'watch.out'}"
        )
        scrape = (
            f"import urllib.request, pathlib; pathlib.Path({str(out / 'metrics.txt')!r}).write_bytes("
            f"urllib.request.urlopen('http://127.0.0.1:{METRICS_PORT}/metrics', timeout=5).read())"
        )
        at = next(i for i, s in enumerate(steps) if s.process == "capture" and s.action is Action.SPAWN) + 1
        steps.insert(at, Step(action=Action.SPAWN, title="rstscope watch", argv=_in_ns(cli, "sh", "-c", watch),
                              process="watch", ready="rstscope: watching", timeout=15.0, signal="SIGINT"))  # fmt: skip
        at = next(i for i, s in enumerate(steps) if s.title == "let late resets arrive") + 1
        steps[at:at] = [
            Step(action=Action.RUN, title="scrape watch's metrics", argv=_in_ns(cli, py, "-c", scrape)),
            Step(action=Action.STOP, title="stop watch", process="watch", signal="SIGINT", timeout=15.0),
        ]
        return steps

    return planned


@pytest.fixture(scope="module")
def watched(tmp_path_factory):
    reason = root_skip_reason()
    if reason:
        pytest.skip(reason)
    from rstscope.lab import trace

    tracefs, why = trace.tracefs_available()
    if not tracefs:
        pytest.skip(f"watch --kernel needs tracefs: {why}")
    done = {}

    def get(name: str):
        if name not in done:
            out = tmp_path_factory.mktemp(f"watch-{name}")
            options = scenarios.options_for(name, port=0, **{"settle": 1.5, **SMALL[name]})
            with mock.patch.object(scenarios, "plan", _with_watch(scenarios.plan, out)):
                result = runner.run_lab(options, out / "runs")
            done[name] = (rundir.load_run(result.path), out)
        return done[name]

    return get


def _lines(out: Path) -> list[tuple[float, dict]]:
    rows = []
    for line in (out / "watch.out").read_text().splitlines():
        stamp, _, text = line.partition(" ")
        rows.append((float(stamp), json.loads(text)))
    return rows


def _metrics(out: Path) -> dict[tuple[str, tuple], float]:
    values = {}
    for line in (out / "metrics.txt").read_text().splitlines():
        m = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
        if m:
            labels = tuple(sorted(re.findall(r'(\w+)="([^"]*)"', m[2] or "")))
            values[(m[1], labels)] = float(m[3])
    return values


@pytest.mark.parametrize("preset", ["close-race", "backlog"])
def test_watch_live(watched, preset):
    run, out = watched(preset)
    rows = _lines(out)
    assert rows and "summary" in rows[-1][1], "watch printed no summary"
    resets = [(t, r) for t, r in rows if "verdict" in r]
    assert resets, f"{preset}: watch printed no RST"

    # The same packets analysed offline: watch's ring holds exactly the stream it read.
    rings = sorted((out / "ring").glob("ring-*"))
    assert len(rings) == 1
    analysis = analyze_capture(rings[0])
    first_row: dict[int, tuple[float, dict]] = {}
    for t, r in resets:
        first_row.setdefault(r["connection"], (t, r))
    expected = {}
    for cid in dict.fromkeys(r["connection"] for r in analysis.resets):
        primary = analysis.primary_reset(cid)
        if primary is not None:
            expected[cid] = (primary["frame"], primary["verdict"], primary["origin"])
    primaries = {cid: (r["frame"], r["verdict"], r["origin"]) for cid, (t, r) in first_row.items()
                 if r["verdict"] not in {v.value for v in NOT_PRIMARY}}  # fmt: skip
    assert primaries == expected
    assert sorted(r["frame"] for _, r in resets) == sorted(r["frame"] for r in analysis.resets)

    # Every primary within 1 s of its capture timestamp.
    late = {cid: round(first_row[cid][0] - first_row[cid][1]["time"], 3) for cid in primaries}
    assert max(late.values()) <= 1.0, late

    # The kernel's reasons joined, and the same as the lab's own trace join of its capture.
    # (The lab captured the same packets with its own dumpcap: the same RST within a few µs.)
    for cid in primaries:
        row = first_row[cid][1]
        assert row["kernel"]["reason"], row
        key = (row["src"], row["dst"], row["flags"])
        twin = min((r for r in run.analysis["resets"] if (r["src"], r["dst"], r["flags"]) == key),
                   key=lambda r: abs(r["time"] - row["time"]))  # fmt: skip
        assert abs(twin["time"] - row["time"]) < 50e-6 and twin["verdict"] == row["verdict"]
        if twin.get("kernel"):
            assert twin["kernel"]["reason"] == row["kernel"]["reason"]
    assert all("kernel" in r for _, r in resets)

    # The counters scraped over HTTP equal the lines printed.
    metrics = _metrics(out)
    printed: dict[tuple, int] = {}
    for cid in primaries:
        r = first_row[cid][1]
        key = ("rstscope_resets_total", (("origin", r["origin"]), ("verdict", r["verdict"])))
        printed[key] = printed.get(key, 0) + 1
    scraped = {k: v for k, v in metrics.items() if k[0] == "rstscope_resets_total"}
    assert scraped == printed
    histogram = metrics[("rstscope_bytes_in_flight_at_reset_count", ())]
    assert histogram == sum(1 for cid in primaries if first_row[cid][1]["in_flight"] is not None)
    listen = [r for _, r in rows if "listen_queue" in r]
    scraped_listen = sum(v for k, v in metrics.items() if k[0] == "rstscope_listen_queue_overflows_total")
    assert scraped_listen == len(listen)
    summary = rows[-1][1]["summary"]
    assert metrics[("rstscope_packets_seen_total", ())] <= summary["packets"]
    assert summary["by_verdict"] == {v: sum(1 for p in primaries.values() if p[1] == v)
                                     for v in {p[1] for p in primaries.values()}}  # fmt: skip
