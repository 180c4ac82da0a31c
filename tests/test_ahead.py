"""Items prepared in a thread one ahead of their use (rstscope/ahead.py), and the analysis that tracks
chunks prepared that way: same results, errors in their place, no thread left behind."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from rstscope import analysis, api, prefetch
from rstscope.ahead import ahead
from rstscope.connections import Tracker
from rstscope.status import RstscopeError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from make_capture import generate


def _threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "rstscope-ahead" and t.is_alive()]


def test_items_come_prepared_in_order_and_the_thread_ends():
    switch = sys.getswitchinterval()
    assert list(ahead(iter(range(500)), lambda i: i * i)) == [i * i for i in range(500)]
    assert not _threads() and sys.getswitchinterval() == switch


def test_the_next_item_is_prepared_while_the_caller_uses_one():
    prepared = {k: threading.Event() for k in range(4)}
    where: list[int] = []

    def prepare(k: int) -> int:
        where.append(threading.get_ident())
        prepared[k].set()
        return k

    for k in ahead(iter(range(4)), prepare):
        if k + 1 in prepared:  # not asked for yet: made meanwhile, in the thread
            assert prepared[k + 1].wait(5)
    assert threading.get_ident() not in where and len(set(where)) == 1


@pytest.mark.parametrize("where", ["items", "prepare"])
def test_an_error_is_raised_in_its_place(where):
    def items():
        yield from range(3)
        if where == "items":
            raise RstscopeError("the reader process ended in the middle of a message")
        yield 3

    def prepare(k: int) -> int:
        if where == "prepare" and k == 3:
            raise RstscopeError("bad chunk")
        return k

    got = []
    with pytest.raises(RstscopeError):
        for k in ahead(items(), prepare):
            got.append(k)
    assert got == [0, 1, 2] and not _threads()


def test_stopping_early_stops_the_thread():
    taken = []

    def items():
        for k in range(1_000_000):
            taken.append(k)
            yield k

    chunks = ahead(items(), lambda k: k)
    assert next(chunks) == 0
    chunks.close()
    assert not _threads()
    assert len(taken) <= 2  # one in use, the next one ready


@pytest.mark.skipif(not prefetch.available(), reason="needs os.fork and two CPUs")
def test_analysis_of_prepared_chunks_is_the_same_and_an_error_stops_it(tmp_path, monkeypatch):
    path = tmp_path / "gen.pcap"
    generate(str(path), 30_000, concurrency=25)
    monkeypatch.setattr(analysis, "READ_PACKETS", 2048)  # many chunks
    monkeypatch.setattr(analysis, "PREFETCH_BYTES", 1 << 60)
    direct = api.document(analysis.analyze_capture(path))
    monkeypatch.setattr(analysis, "PREFETCH_BYTES", 0)  # read by the child, prepared ahead
    sliced, made = Tracker.sliced, []
    monkeypatch.setattr(Tracker, "sliced", staticmethod(lambda chunk: made.append(1) or sliced(chunk)))
    assert api.document(analysis.analyze_capture(path)) == direct
    assert len(made) >= 14
    made.clear()

    def failing(chunk):
        if len(made) == 5:
            raise RstscopeError("bad chunk")
        made.append(1)
        return sliced(chunk)

    monkeypatch.setattr(Tracker, "sliced", staticmethod(failing))
    with pytest.raises(RstscopeError, match="bad chunk"):
        analysis.analyze_capture(path)
    assert not _threads()
