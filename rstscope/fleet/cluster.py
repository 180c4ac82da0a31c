"""``--dask ADDRESS``: the shard work of :mod:`.shards` as dask.distributed tasks.

Phase 1 is one task per piece (any worker); phase 2 is one task per shard, as many shards as the
cluster has worker threads, each pinned to its own thread so that all run at once: they advance in
lockstep, exchanging their pressure counts at every slice through the scheduler
(:class:`VariableExchange`, one ``distributed.Variable`` per shard and slice).

Files.  The workers read the pieces by the paths given to rstscope, and phase 1 and 2 exchange
their files through a work directory that the workers and this process must all see: by default a
hidden directory beside the first piece (``RSTSCOPE_SHARED_TMP`` names another).  Run every worker
with the same paths mounted (NFS, a cluster file system, or one machine).

Why dask.distributed: it runs the same Python functions on one machine's processes
(``LocalCluster``, the tests) or on many machines (``dask scheduler`` / ``dask worker``), ships
arguments and results, and places tasks on named workers; nothing else is needed on the workers
than rstscope installed.
"""

from __future__ import annotations

import gc
import os
import tempfile
import uuid
from pathlib import Path

from rstscope.fleet import shards, timing
from rstscope.fleet.pieces import Piece
from rstscope.status import InputError, RstscopeError

TIMEOUT_S = 3600
"""How long a shard waits for the others' counts at one slice."""


def analyze_group(group: list[Piece], options, *, address: str, progress=None, warn=lambda m: None):
    return shards.run_engine(group, options, DaskEngine(address), progress=progress, warn=warn)


class VariableExchange:
    """Pressure counts summed over the shards through the scheduler: shard j sets its count of round r
    in the Variable ``{token}-{r}-{j}`` and reads the others' (a get waits until the value is set)."""

    def __init__(self, token: str, shard: int, shards_: int) -> None:
        self.token, self.shard, self.shards = token, shard, shards_
        self._round = 0
        self.waits = timing.Stopwatch()

    def total(self, count: int) -> int:
        from distributed import Variable

        r = self._round
        self._round += 1
        with self.waits.timing():
            Variable(f"{self.token}-{r}-{self.shard}").set(count)
            total = sum(int(Variable(f"{self.token}-{r}-{j}").get(timeout=TIMEOUT_S)) for j in range(self.shards))
        if r >= 2:  # everyone has read round r - 2 before setting round r - 1, which this shard has read
            Variable(f"{self.token}-{r - 2}-{self.shard}").delete()
        return total


def _track_task(shard: int, pieces, sched, workdir: str, token: str, count: int, info, zeek_timers: bool):
    # The worker's own objects (distributed's) out of the cyclic collector's passes while the stages after
    # tracking allocate millions of short-lived ones; they are long-lived anyway.
    gc.freeze()
    try:
        exchange = VariableExchange(token, shard, count)
        return shards.track_shard(shard, pieces, sched, workdir, exchange, info, zeek_timers)
    finally:
        gc.unfreeze()


class DaskEngine:
    def __init__(self, address: str) -> None:
        try:
            from distributed import Client
        except ImportError:
            raise InputError("--dask needs dask.distributed: pip install 'rstscope[fleet]'") from None
        try:
            self.client = Client(address, timeout="10s")
        except (OSError, TimeoutError) as exc:
            raise InputError(f"--dask {address}: cannot reach the scheduler ({exc})") from None
        self.slots = [addr for addr, info in self.client.scheduler_info()["workers"].items()
                      for _ in range(info.get("nthreads", 1))]  # fmt: skip
        if not self.slots:
            raise InputError(f"--dask {address}: the cluster has no workers")
        self.shards = len(self.slots)

    def workdir(self, group: list[Piece]) -> str:
        base = os.environ.get("RSTSCOPE_SHARED_TMP") or str(Path(group[0].path).resolve().parent)
        try:
            return tempfile.mkdtemp(prefix=".rstscope-fleet-", dir=base)
        except OSError as exc:
            raise InputError(f"--dask: cannot make a shared work directory in {base} ({exc.strerror}); "
                             "set RSTSCOPE_SHARED_TMP to a directory the workers see") from None  # fmt: skip

    def decode(self, group: list[Piece], workdir: str, progress):
        from distributed import as_completed

        futures = [self.client.submit(shards.decode_piece, str(Path(p.path).resolve()), i, self.shards, workdir,
                                      pure=False) for i, p in enumerate(group)]  # fmt: skip
        decoded = [None] * len(group)
        packets = nbytes = 0
        for done, future in enumerate(as_completed(futures), 1):
            d = _result(future)
            decoded[d.index] = d
            packets += d.packets
            nbytes += group[d.index].size
            if progress is not None:
                progress(done, packets, nbytes)
        return decoded

    def track(self, pieces, sched, workdir: str, info, zeek_timers: bool, progress=None):
        token = f"rstscope-{uuid.uuid4().hex}"
        futures = [
            self.client.submit(
                _track_task,
                j,
                pieces,
                sched,
                workdir,
                token,
                self.shards,
                info,
                zeek_timers,
                workers=[self.slots[j]],
                allow_other_workers=False,
                pure=False,
            )
            for j in range(self.shards)
        ]
        return [_result(f) for f in futures]

    def close(self) -> None:
        self.client.close()


def _result(future):
    try:
        return future.result()
    except (InputError, RstscopeError):
        raise
    except Exception as exc:  # a worker's failure, as one line
        raise RstscopeError(f"dask task failed: {type(exc).__name__}: {exc}") from None
