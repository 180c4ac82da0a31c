"""``--dask ADDRESS``: the shard work of :mod:`.shards` as dask.distributed tasks.

Phase 1 is one task per piece (any worker); phase 2 is one task per shard, as many shards as the
cluster has worker threads, each pinned to its own thread so that all run at once.  A shard's task
runs it in a process of its own (:mod:`.shard_process`: the worker's threads and memory settings
made the same work cost ≈ 1.4x the CPU in the worker); the shards advance in lockstep, exchanging
their pressure counts at every slice over TCP with shard 0.

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

import contextlib
import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

from rstscope import heap
from rstscope.fleet import shards
from rstscope.fleet.pieces import Piece
from rstscope.status import InputError, RstscopeError


def analyze_group(group: list[Piece], options, *, address: str, progress=None, warn=lambda m: None):
    return shards.run_engine(group, options, DaskEngine(address), progress=progress, warn=warn)


def _track_task(job) -> tuple[str, object]:
    """Phase 2 of one shard, in a process this task starts (:mod:`.shard_process` says why), with the
    worker's environment less the nanny's MALLOC_TRIM_THRESHOLD_; its outcome as ``--jobs`` has it."""
    from rstscope.fleet import shard_process

    path = Path(job.workdir) / f"job-{job.shard}"
    with open(path, "wb") as f:
        pickle.dump(job, f)
    (Path(job.workdir) / f"result-{job.shard}").unlink(missing_ok=True)  # a previous capture's
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_TRIM_THRESHOLD_"}
    subprocess.run([sys.executable, "-m", shard_process.__name__, str(path)], env=env, stdin=subprocess.DEVNULL,
                   check=False)  # fmt: skip
    return shards.read_outcome(job.workdir, job.shard)


def _decode_task(path: str, index: int, count: int, workdir: str) -> shards.Decoded:
    with _glibc_thresholds():
        return shards.decode_piece(path, index, count, workdir)


@contextlib.contextmanager
def _glibc_thresholds():
    """While decoding in a worker started by a nanny (``MALLOC_TRIM_THRESHOLD_`` set, which fixes glibc's
    mmap threshold at 128 KB: every chunk-sized numpy array a fresh mapping, its pages faulted in
    again), the thresholds glibc's dynamic rule would reach; the nanny's again afterwards."""
    trim = os.environ.get("MALLOC_TRIM_THRESHOLD_")
    libc = heap.libc() if trim and trim.isdigit() else None
    if libc is None:
        yield
        return
    libc.mallopt(heap.M_MMAP_THRESHOLD, heap.MMAP_THRESHOLD)
    libc.mallopt(heap.M_TRIM_THRESHOLD, 2 * heap.MMAP_THRESHOLD)
    try:
        yield
    finally:
        libc.mallopt(heap.M_MMAP_THRESHOLD, 128 << 10)
        libc.mallopt(heap.M_TRIM_THRESHOLD, int(trim))
        heap.give_back()


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

        futures = [self.client.submit(_decode_task, str(Path(p.path).resolve()), i, self.shards, workdir,
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

    def track(self, pieces, sched, workdir: str, info, options: shards.ShardOptions, progress=None):
        from distributed import as_completed
        from distributed.comm import get_address_host

        from rstscope.fleet.shard_process import Job, call_off

        host = get_address_host(self.slots[0])
        jobs = [Job(shard=j, shards=self.shards, pieces=pieces, sched=sched, workdir=workdir, info=info,
                    options=options, hub_host=host) for j in range(self.shards)]  # fmt: skip
        futures = {self.client.submit(_track_task, job, workers=[self.slots[job.shard]], allow_other_workers=False,
                                      pure=False): job.shard for job in jobs}  # fmt: skip
        outcomes: list = [None] * self.shards
        for future in as_completed(futures):
            outcomes[futures[future]] = outcome = _result(future)
            if outcome[0] != "ok":
                call_off(Path(shards.output_dir(workdir, pieces)))  # shard 0 may have died before it listened
        return shards.pick(outcomes)

    def close(self) -> None:
        self.client.close()


def _result(future):
    try:
        return future.result()
    except (InputError, RstscopeError):
        raise
    except Exception as exc:  # a worker's failure, as one line
        raise RstscopeError(f"dask task failed: {type(exc).__name__}: {exc}") from None
