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
    """Read a run directory; raises InputError (one line naming the file, the line and the field)
    when run.json is missing or unreadable, or a file holds values of the wrong kind."""
    path = Path(path)
    if not is_run_dir(path):
        raise InputError(f"{path} is not a run directory (no run.json written by `rstscope lab`)")
    run = _read_json(path / RUN_JSON)
    _check_fields(path / RUN_JSON, run, RUN_FIELDS)
    capture = None
    named = run.get("capture", {}).get("file")
    for name in ([named] if isinstance(named, str) and named else []) + list(CAPTURE_NAMES):
        if (path / name).is_file():
            capture = path / name
            break
    analysis = None
    if (path / ANALYSIS).is_file():
        try:
            analysis = json.loads((path / ANALYSIS).read_text())
        except ValueError:
            analysis = None  # written by a run that died while writing it: analyse again
        except OSError as exc:
            raise InputError(f"{path / ANALYSIS}: {exc.strerror}") from None
        if analysis is not None:
            _check_analysis(path / ANALYSIS, analysis)
    nstat = {}
    if (path / NSTAT).is_file():
        nstat = _read_json(path / NSTAT)
        _check_nstat(path / NSTAT, nstat)
    kernel = read_jsonl(path / KERNEL, check=KERNEL_FIELDS)
    kept = run.get("trace", {}).get("kept")
    if run.get("trace", {}).get("available") and isinstance(kept, int) and len(kernel) != kept:
        raise InputError(
            f"{path / KERNEL}: {len(kernel)} kernel records, but run.json says {kept} were kept: "
            "the file is truncated or was edited"
        )
    return RunDir(
        path=path,
        run=run,
        clients=read_jsonl(path / CLIENTS, keep=lambda r: "attempt" in r, check=CLIENT_FIELDS),
        server=read_jsonl(path / SERVER),
        kernel=kernel,
        nstat=nstat,
        analysis=analysis,
        capture=capture,
    )


# What the readers of a run directory rely on, per file: field -> allowed JSON types (a missing
# field is fine; a field of another type is bad input, reported with the file and line).
_NUMBER = (int, float)
_TEXT = (str, type(None))
_INT = (int, type(None))
RUN_FIELDS = {"capture": (dict,), "trace": (dict,), "options": (dict,), "addresses": (dict,), "names": (dict,),
              "status": (str,), "warnings": (list,), "clients": (list,), "analysis": (dict,)}  # fmt: skip
KERNEL_FIELDS = {"event": (str,), "time": _NUMBER, "reason": _TEXT, "state": _TEXT, "src": _TEXT, "dst": _TEXT,
                 "netns": _TEXT, "listener": (bool, type(None)), "active": (bool, type(None))}  # fmt: skip
KERNEL_REQUIRED = ("event", "time")
CLIENT_FIELDS = {"attempt": (int,), "client_port": _INT, "outcome": (str,), "bytes_read": _INT,
                 "bytes_expected": _INT, "connect": _TEXT, "t_start": (int, float, type(None)),
                 "t_end": (int, float, type(None))}  # fmt: skip
ANALYSIS_LISTS = ("resets", "connections", "captures")


def _kind(types: tuple[type, ...]) -> str:
    names = {int: "a number", float: "a number", str: "text", dict: "an object", list: "a list", bool: "true/false",
             type(None): "null"}  # fmt: skip
    return " or ".join(dict.fromkeys(names[t] for t in types))


def _check_fields(where: Path, record, fields: dict, line: int | None = None, required: tuple[str, ...] = ()) -> None:
    at = f"{where}:{line}" if line is not None else str(where)
    if not isinstance(record, dict):
        raise InputError(f"{at}: expected a JSON object, found {type(record).__name__}")
    for name in required:
        if name not in record:
            raise InputError(f"{at}: record without {name!r}")
    for name, types in fields.items():
        if name not in record:
            continue
        value = record[name]
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            raise InputError(f"{at}: {name!r} is {json.dumps(value)[:40]}, expected {_kind(types)}")


def _check_nstat(where: Path, nstat) -> None:
    if not isinstance(nstat, dict):
        raise InputError(f"{where}: expected an object of namespaces, found {type(nstat).__name__}")
    for side, data in nstat.items():
        _check_fields(where, data, {"counters": (dict,), "other": (dict,)})
        for group in ("counters", "other"):
            for name, value in data.get(group, {}).items():
                if isinstance(value, bool) or not isinstance(value, int):
                    raise InputError(f"{where}: {side} counter {name} is {json.dumps(value)[:40]}, expected a number")


def _check_analysis(where: Path, analysis) -> None:
    if not isinstance(analysis, dict):
        raise InputError(f"{where}: expected a JSON object; delete it and run `rstscope analyze` on the run")
    for name in ANALYSIS_LISTS:
        value = analysis.get(name, [])
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            raise InputError(
                f"{where}: {name!r} is not a list of objects; delete the file and run `rstscope analyze` on the run"
            )


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror}") from None


def read_jsonl(path: Path, keep=None, *, check: dict | None = None) -> list[dict]:
    """JSON lines of ``path`` (none when missing); lines that are not JSON objects are skipped.

    ``check``: field -> allowed types (see :data:`KERNEL_FIELDS`); a kept record with a field of
    another type raises InputError naming the file and the line."""
    if not path.is_file():
        return []
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror}") from None
    required = KERNEL_REQUIRED if check is KERNEL_FIELDS else ()
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut by a killed process
        if keep is None or keep(record):
            if check is not None:
                _check_fields(path, record, check, number, required)
            records.append(record)
    return records


def write_json(path: Path, data) -> None:
    """Write ``data`` as JSON atomically (a temporary file renamed over ``path``)."""
    from rstscope.output import write_text

    write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def write_jsonl(path: Path, records: list[dict]) -> None:
    """One JSON object per line, written atomically."""
    from rstscope.output import atomic_file

    with atomic_file(path) as out:
        for record in records:
            out.write(json.dumps(record, default=str) + "\n")


def rewrite_in_place(path: Path, data: dict, *, keep: tuple[str, ...]) -> bool:
    """Rewrite ``path`` in place, for when the disk is too full for an atomic rewrite: written
    over the file's own bytes and cut to length, compact JSON needs no new space as long as it is
    no longer than the file was.  ``data`` is tried whole, then only its ``keep`` keys.  Not
    atomic: the last resort that keeps run.json from saying ``running`` for a run that ended.
    True when the file now holds one of them."""
    try:
        size = path.stat().st_size
    except OSError:
        return False
    for candidate in (data, {k: data[k] for k in keep if k in data}):
        text = json.dumps(candidate, separators=(",", ":"), default=str).encode() + b"\n"
        if len(text) > size:
            continue
        try:
            with open(path, "r+b") as handle:
                handle.write(text)
                handle.truncate(len(text))
            return True
        except OSError:
            return False
    return False


def new_run_dir(root: Path, scenario: str, now: float | None = None) -> Path:
    """Create ``root/<YYYYmmdd-HHMMSS>-<scenario>`` (with ``-2``, ``-3`` ... if taken)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now if now is not None else time.time()))
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", scenario) or "run"
    try:
        root.mkdir(parents=True, exist_ok=True)
        for suffix in range(1, 1000):
            candidate = root / (f"{stamp}-{safe}" if suffix == 1 else f"{stamp}-{safe}-{suffix}")
            try:
                candidate.mkdir()
            except FileExistsError:
                continue
            (candidate / "logs").mkdir()
            return candidate
    except OSError as exc:
        raise InputError(f"cannot create a run directory under {root}: {exc.strerror}") from None
    raise InputError(f"cannot create a run directory under {root}: 999 runs in the same second")
