"""Find and remove what lab runs killed with SIGKILL left behind.

A run names everything it creates ``rs-<pid>-<hex>`` (``scenarios.Names``) and marks every
process it starts with ``RSTSCOPE_RUN=rs-<pid>-<hex>`` in its environment (``netns.RUN_MARK``).
A run is *stale* when the process ``<pid>`` is gone; only stale runs are touched, so two live
runs never clean each other up (a live pid reused by another program keeps its run's leftovers
until that program ends: the safe side).

Leftovers of a stale run, removed in this order:

* processes carrying its mark, or sitting in one of its namespaces (capture tool, server,
  clients): SIGKILL, since their run is gone;
* its trace instance under tracefs (tracing stopped first);
* its namespaces (``ip netns del``), which takes their veth pair, qdiscs and nftables tables;
* the private tracefs mount a run makes when tracefs was not mounted (unmounted, directory removed).

``rstscope lab --cleanup`` lists every removal; a lab run does the same silently at its start
and records the list in run.json (``stale_removed``).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from rstscope.lab import trace
from rstscope.lab.netns import RUN_MARK

RUN_NAME = re.compile(r"^(rs-(\d+)-[0-9a-f]{4})(?:-|$)")
"""A run's name at the start of a namespace, trace instance or mount directory: group 1 is the
run (``rs-<pid>-<hex>``), group 2 its owner's pid."""
NETNS_DIR = Path("/run/netns")
KILL_WAIT = 3.0
"""Seconds to wait for killed processes to be gone before the namespaces are deleted."""


@dataclass(frozen=True, kw_only=True)
class Leftover:
    kind: str
    """``process``, ``trace instance``, ``namespace`` or ``tracefs mount``."""
    run: str
    """The run it belongs to (``rs-<pid>-<hex>``)."""
    name: str
    """What it is: a pid, an instance path, a namespace name, a mount point."""
    detail: str = ""
    """For display: a process's command line, the links and nftables tables in a namespace."""

    def describe(self) -> str:
        extra = f" ({self.detail})" if self.detail else ""
        return f"{self.kind} {self.name}{extra} of dead run {self.run}"


def owner_alive(run: str) -> bool:
    match = RUN_NAME.match(run)
    return bool(match) and Path(f"/proc/{match[2]}").exists()


def _stale_run(name: str) -> str | None:
    """The stale run ``name`` belongs to, or None (not a run's, or its run is alive)."""
    match = RUN_NAME.match(name)
    if match is None or Path(f"/proc/{match[2]}").exists():
        return None
    return match[1]


def find_stale() -> list[Leftover]:
    """Everything that belongs to runs whose owner process is gone (changes nothing)."""
    found: list[Leftover] = []
    namespaces = _stale_namespaces()
    inodes = {_netns_inode(name): (run, name) for run, name in namespaces}
    for pid, argv, mark, inode in _processes():
        run = _stale_run(mark) if mark else None
        if run is None and inode in inodes:
            run = inodes[inode][0]
        if run is not None:
            found.append(Leftover(kind="process", run=run, name=str(pid), detail=argv[:120]))
    for path in _trace_instances():
        run = _stale_run(path.name)
        if run is not None:
            found.append(Leftover(kind="trace instance", run=run, name=str(path)))
    for run, name in namespaces:
        found.append(Leftover(kind="namespace", run=run, name=name, detail=_namespace_contents(name)))
    for mount_point in _private_tracefs_mounts():
        run = _stale_run(mount_point.name)
        if run is not None:
            found.append(Leftover(kind="tracefs mount", run=run, name=str(mount_point)))
    return found


def remove(leftovers: list[Leftover]) -> list[str]:
    """Remove ``leftovers`` in a safe order; returns one line per removal (and per failure)."""
    done: list[str] = []
    processes = [item for item in leftovers if item.kind == "process"]
    for item in processes:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(item.name), signal.SIGKILL)
    _wait_gone([int(item.name) for item in processes])
    done += [f"killed {item.describe()}" for item in processes]
    for item in leftovers:
        if item.kind == "trace instance":
            done.append(_remove_instance(item))
    for item in leftovers:
        if item.kind == "namespace":
            result = subprocess.run(["ip", "netns", "del", item.name], capture_output=True, text=True)
            ok = result.returncode == 0
            done.append(f"removed {item.describe()}" if ok else f"could not remove {item.describe()}: "
                        f"{result.stderr.strip()}")  # fmt: skip
    for item in leftovers:
        if item.kind == "tracefs mount":
            result = subprocess.run(["umount", item.name], capture_output=True, text=True)
            if result.returncode == 0:
                with contextlib.suppress(OSError):
                    Path(item.name).rmdir()
                done.append(f"unmounted {item.describe()}")
            else:
                done.append(f"could not unmount {item.describe()}: {result.stderr.strip()}")
    return done


# ------------------------------------------------------------------------------ finding


def _stale_namespaces() -> list[tuple[str, str]]:
    if not NETNS_DIR.is_dir():
        return []
    out = []
    for entry in sorted(NETNS_DIR.iterdir()):
        run = _stale_run(entry.name)
        if run is not None:
            out.append((run, entry.name))
    return out


def _netns_inode(name: str) -> int | None:
    try:
        return os.stat(NETNS_DIR / name).st_ino
    except OSError:
        return None


def _processes():
    """(pid, command line, run mark, network namespace inode) of every other process."""
    me = os.getpid()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == me:
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            inode = os.stat(proc / "ns" / "net").st_ino
        except OSError:
            continue
        prefix = f"{RUN_MARK}=".encode()
        mark = next((item[len(prefix) :].decode(errors="replace") for item in environ if item.startswith(prefix)), "")
        text = " ".join(a.decode(errors="replace") for a in argv if a)
        yield int(proc.name), text, mark, inode


def _tracefs_roots() -> list[Path]:
    roots = [root for root in trace.TRACEFS_MOUNTS if (root / "instances").is_dir()]
    return roots + [p for p in _private_tracefs_mounts() if p not in roots]


def _trace_instances() -> list[Path]:
    """Run-named instances, once each (every tracefs mount shows the same instances)."""
    seen: dict[str, Path] = {}
    for root in _tracefs_roots():
        instances = root / "instances"
        with contextlib.suppress(OSError):
            for path in sorted(instances.iterdir()):
                if RUN_NAME.match(path.name):
                    seen.setdefault(path.name, path)
    return list(seen.values())


def _private_tracefs_mounts() -> list[Path]:
    """tracefs mount points a run made itself (``<run>-tracefs-*``, see ``trace.TraceSession``)."""
    out = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[2] == "tracefs":
                point = Path(parts[1].replace("\\040", " "))
                if RUN_NAME.match(point.name) and "-tracefs-" in point.name:
                    out.append(point)
    return out


def _namespace_contents(name: str) -> str:
    """The links and nftables tables inside a namespace, for the removal list."""
    links = subprocess.run(["ip", "-n", name, "-o", "link", "show"], capture_output=True, text=True)
    devs = [line.split(":")[1].strip().split("@")[0] for line in links.stdout.splitlines() if line.count(":") >= 2]
    devs = [d for d in devs if d != "lo"]
    tables = subprocess.run(["ip", "netns", "exec", name, "nft", "list", "tables"], capture_output=True, text=True)
    nft = [line.removeprefix("table ").strip() for line in tables.stdout.splitlines() if line.startswith("table")]
    parts = []
    if devs:
        parts.append("veth " + ", ".join(devs))
    if nft:
        parts.append("nft table " + ", ".join(nft))
    return "; ".join(parts)


# ------------------------------------------------------------------------------ removing


def _wait_gone(pids: list[int]) -> None:
    deadline = time.monotonic() + KILL_WAIT
    while pids and time.monotonic() < deadline:
        pids = [pid for pid in pids if _alive(pid)]
        if pids:
            time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _remove_instance(item: Leftover) -> str:
    path = Path(item.name)
    with contextlib.suppress(OSError):
        (path / "tracing_on").write_text("0\n")
    for attempt in range(20):
        try:
            path.rmdir()
            return f"removed {item.describe()}"
        except FileNotFoundError:
            return f"removed {item.describe()}"
        except OSError as exc:  # EBUSY while a killed reader's file is still being closed
            if attempt == 19:
                return f"could not remove {item.describe()}: {exc.strerror}"
            time.sleep(0.1)
    return f"could not remove {item.describe()}"
