"""The run directory: what a lab or capture run leaves behind, and how to read it back.

Layout of ``captures/runs/<time>-<scenario>/``:

================ ================================================================
run.json         every option, the plan as executed (commands, exit codes,
                 durations), names and addresses, sysctls, tool versions, the
                 kernel, capture drop counts, trace statistics, errors
capture.pcapng   the client-side capture (capture.pcap when tcpdump wrote it)
clients.jsonl    one line per client attempt (see ``rstscope.pair.Attempt``)
server.jsonl     the server's ``listening`` line and one line per connection
kernel.jsonl     tracepoint records of the run, times on the capture's clock
nstat.json       counter deltas per namespace (``rstscope.lab.nstat``)
analysis.json    ``rstscope.api.analyze`` output joined with the ground truth
logs/            stderr of every background process
================ ================================================================

Re-running the analysis needs nothing but this directory.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from rstscope.status import InputError

MARKER = "rstscope_run"
"""Key in run.json whose value is the layout version; its presence makes a run directory."""
LAYOUT_VERSION = 1

RUN_JSON = "run.json"
CLIENTS = "clients.jsonl"
SERVER = "server.jsonl"
KERNEL = "kernel.jsonl"
NSTAT = "nstat.json"
ANALYSIS = "analysis.json"
CAPTURE_NAMES = ("capture.pcapng", "capture.pcap")


@dataclass(kw_only=True)
class RunDir:
    """A run directory read back.  Missing optional files give empty values, never errors."""

    path: Path
    run: dict
    """run.json as written (``options``, ``plan``, ``names``, ``capture``, ``trace``, ...)."""
    clients: list[dict] = field(default_factory=list)
    """clients.jsonl: one record per attempt (empty for ``capture`` runs without the pair)."""
    server: list[dict] = field(default_factory=list)
    kernel: list[dict] = field(default_factory=list)
    """kernel.jsonl: tracepoint records with ``time`` on the capture's clock (empty without tracefs)."""
    nstat: dict = field(default_factory=dict)
    """nstat.json: ``{side: {"counters": {...}, "other": {...}}}``."""
    analysis: dict | None = None
    """analysis.json, or None when the analysis failed or has not run."""
    capture: Path | None = None
    """The capture file, or None when the capture failed."""

    @property
    def capture_path(self) -> Path:
        """The capture file; raises InputError when the run has none (its capture step failed)."""
        if self.capture is None:
            raise InputError(f"{self.path}: the run directory holds no capture (see run.json: capture)")
        return self.capture

    @property
    def scenario(self) -> str:
        return self.run.get("options", {}).get("scenario") or self.run.get("scenario", "custom")

    @property
    def addresses(self) -> dict[str, str]:
        """IP -> side (``server``/``client``/``host``) for this run's endpoints."""
        return dict(self.run.get("addresses", {}))

    @property
    def kernel_available(self) -> bool:
        return bool(self.run.get("trace", {}).get("available"))


def is_run_dir(path: str | Path) -> bool:
    """True when ``path`` is a directory holding a run.json written by the lab or ``capture``."""
    run_json = Path(path) / RUN_JSON
    if not run_json.is_file():
        return False
    try:
        return MARKER in json.loads(run_json.read_text())
    except (OSError, ValueError):
        return False


def load_run(path: str | Path) -> RunDir:
    """Read a run directory; raises InputError when run.json is missing or unreadable."""
    path = Path(path)
    if not is_run_dir(path):
        raise InputError(f"{path} is not a run directory (no run.json written by `rstscope lab`)")
    run = json.loads((path / RUN_JSON).read_text())
    capture = None
    named = run.get("capture", {}).get("file")
    for name in ([named] if named else []) + list(CAPTURE_NAMES):
        if (path / name).is_file():
            capture = path / name
            break
    analysis = None
    if (path / ANALYSIS).is_file():
        try:
            analysis = json.loads((path / ANALYSIS).read_text())
        except ValueError:
            analysis = None
    nstat = {}
    if (path / NSTAT).is_file():
        nstat = json.loads((path / NSTAT).read_text())
    return RunDir(
        path=path,
        run=run,
        clients=read_jsonl(path / CLIENTS, keep=lambda r: "attempt" in r),
        server=read_jsonl(path / SERVER),
        kernel=read_jsonl(path / KERNEL),
        nstat=nstat,
        analysis=analysis,
        capture=capture,
    )


def read_jsonl(path: Path, keep=None) -> list[dict]:
    """JSON lines of ``path`` (none when missing); lines that are not JSON objects are skipped."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(errors="replace").splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut by a killed process
        if keep is None or keep(record):
            records.append(record)
    return records


def write_json(path: Path, data) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    tmp.replace(path)


def write_jsonl(path: Path, records: list[dict]) -> None:
    with path.open("w") as out:
        for record in records:
            out.write(json.dumps(record, default=str) + "\n")


def new_run_dir(root: Path, scenario: str, now: float | None = None) -> Path:
    """Create ``root/<YYYYmmdd-HHMMSS>-<scenario>`` (with ``-2``, ``-3`` ... if taken)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now if now is not None else time.time()))
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", scenario) or "run"
    root.mkdir(parents=True, exist_ok=True)
    for suffix in range(1, 1000):
        candidate = root / (f"{stamp}-{safe}" if suffix == 1 else f"{stamp}-{safe}-{suffix}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        (candidate / "logs").mkdir()
        return candidate
    raise InputError(f"cannot create a run directory under {root}: 999 runs in the same second")
