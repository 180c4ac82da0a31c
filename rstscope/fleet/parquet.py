"""``--parquet DIR``: resets and connections as Parquet files, one per capture piece.

Layout::

    DIR/resets/[HOST_]PIECE.parquet        the columns of --csv, plus host, file and file_frame
    DIR/connections/[HOST_]PIECE.parquet   the JSON connection row, flat (packets_client, ...),
                                           plus host, file, file_frame, last_file, last_file_frame

A reset belongs to the piece that holds its frame, a connection to the piece of its first frame.
Every file of a kind has the same schema (:data:`RESET_SCHEMA`, :data:`CONNECTION_SCHEMA`), so
``SELECT * FROM 'DIR/resets/*.parquet'`` works in DuckDB, as ``pandas.read_parquet(DIR + "/resets")``
and Spark's ``spark.read.parquet``.  Rows are written in batches, so memory stays bounded by a batch;
each file is written under a temporary name and renamed when complete.

Why pyarrow: it is the reference Parquet writer (typed columns, nullable integers, lists) and
DuckDB, pandas and Spark all read its files.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from rstscope.document import connection_row
from rstscope.output import check_writable_dir
from rstscope.report.text import CSV_COLUMNS
from rstscope.status import InputError

BATCH_ROWS = 20_000
"""Rows buffered per file before they are written."""

_STR = {"src", "dst", "sender", "flags", "phase", "verdict", "rule", "confidence", "origin", "sender_ttl",
        "in_flight_basis", "answers", "kernel_reason", "explanation"}  # fmt: skip
_SIDES = ("packets", "payload_bytes", "stream_bytes", "unacked_bytes", "retransmissions")


def _schemas():
    import pyarrow as pa

    resets = [(c, pa.float64() if c == "time" else pa.string() if c in _STR else pa.int64()) for c in CSV_COLUMNS]
    resets += [("host", pa.string()), ("file", pa.string()), ("file_frame", pa.int64())]
    conns = [("capture", pa.int64()), ("id", pa.int64()), ("client", pa.string()), ("server", pa.string()),
             ("originator_inferred", pa.bool_()), ("ip_version", pa.int64()), ("tunnel_id", pa.uint64()),
             ("start", pa.float64()), ("end", pa.float64()), ("duration", pa.float64()),
             ("first_frame", pa.int64()), ("last_frame", pa.int64())]  # fmt: skip
    conns += [(f"{k}_{s}", pa.int64()) for k in _SIDES for s in ("client", "server")]
    conns += [("history", pa.string()), ("conn_state", pa.string()), ("phase", pa.string()),
              ("syn_retransmissions", pa.int64()), ("synack_retransmissions", pa.int64()),
              ("synack_after_ack", pa.int64()), ("resets", pa.list_(pa.int64())), ("verdict", pa.string()),
              ("in_flight_at_reset", pa.int64()), ("lost_data", pa.bool_()), ("findings", pa.list_(pa.string())),
              ("wireshark_filter", pa.string()), ("host", pa.string()), ("file", pa.string()),
              ("file_frame", pa.int64()), ("last_file", pa.string()), ("last_file_frame", pa.int64())]  # fmt: skip
    return pa.schema(resets), pa.schema(conns)


def _import_pyarrow():
    try:
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise InputError("--parquet needs pyarrow: pip install 'rstscope[fleet]'") from None


class _Files:
    """One Parquet writer per piece file, written in batches, renamed into place on close."""

    def __init__(self, directory: Path, schema) -> None:
        self.directory, self.schema = directory, schema
        self._writers: dict[str, tuple] = {}  # name -> (writer, temporary path, rows buffered)

    def add(self, name: str, row: dict) -> None:
        entry = self._writers.get(name)
        if entry is None:
            import pyarrow.parquet as pq

            tmp = self.directory / f".{name}.tmp"
            entry = self._writers[name] = (pq.ParquetWriter(tmp, self.schema), tmp, [])
        entry[2].append(row)
        if len(entry[2]) >= BATCH_ROWS:
            self._flush(entry)

    def _flush(self, entry) -> None:
        import pyarrow as pa

        writer, _, rows = entry
        if rows:
            writer.write_table(pa.Table.from_pylist(rows, schema=self.schema))
            rows.clear()

    def close(self, *, keep: bool = True) -> None:
        """Complete every file and rename it into place (``keep``), or remove them.  A failure while
        completing them (a full disk) removes those not yet in place, and is raised."""
        try:
            for name, entry in list(self._writers.items()) if keep else ():
                self._flush(entry)
                entry[0].close()
                os.replace(entry[1], self.directory / name)
                del self._writers[name]
        finally:
            for writer, tmp, _rows in self._writers.values():
                with contextlib.suppress(OSError):  # closing flushes what it holds: the disk may be full
                    writer.close()
                tmp.unlink(missing_ok=True)
            self._writers.clear()


def _piece_name(host: str, path: str, used: dict[str, str]) -> str:
    """``[HOST_]STEM.parquet``, unique within the run."""
    stem = Path(path).name.split(".")[0] or "capture"
    name = f"{host}_{stem}" if host else stem
    candidate, n = name, 1
    while used.get(f"{candidate}.parquet", path) != path:
        n += 1
        candidate = f"{name}-{n}"
    used[f"{candidate}.parquet"] = path
    return f"{candidate}.parquet"


def prepare(directory: Path) -> None:
    """Check, before any analysis, that pyarrow is there and the directories can be written."""
    _import_pyarrow()
    for sub in ("resets", "connections"):
        try:
            (directory / sub).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"--parquet {directory}: cannot make {directory / sub} ({exc.strerror})") from None
        check_writable_dir(directory / sub, what="--parquet directory")


def write(analyses, directory: Path) -> list[Path]:
    """Write the Parquet files of ``analyses`` under ``directory``; the files written."""
    prepare(directory)
    reset_schema, conn_schema = _schemas()
    resets, conns = _Files(directory / "resets", reset_schema), _Files(directory / "connections", conn_schema)
    used: dict[str, str] = {}
    ok = False
    try:
        for i, a in enumerate(analyses):
            host = getattr(a.capture, "host", "")
            for row in a.resets:  # document rows, in frame order
                row["capture"] = i
                row.setdefault("file", a.capture.path)
                row.setdefault("file_frame", row["frame"])
                flat = {c: row.get(c) for c in CSV_COLUMNS} | {"kernel_reason": None}
                flat |= {"host": host, "file": row["file"], "file_frame": row["file_frame"]}
                resets.add(_piece_name(host, row["file"], used), flat)
            for conn in a.connections:
                row = connection_row(a, conn, i)
                row.setdefault("file", a.capture.path)
                row.setdefault("file_frame", row["first_frame"])
                row.setdefault("last_file", a.capture.path)
                row.setdefault("last_file_frame", row["last_frame"])
                for k in _SIDES:
                    sides = row.pop(k)
                    row[f"{k}_client"], row[f"{k}_server"] = sides["client"], sides["server"]
                row["host"] = host
                conns.add(_piece_name(host, row["file"], used), row)
        resets.close()
        conns.close()
        ok = True
    except OSError as exc:  # pyarrow's carry no errno: "Error writing bytes to file. Detail: [errno 28] ..."
        raise InputError(f"--parquet {directory}: cannot write ({exc.strerror or exc})") from exc
    finally:
        if not ok:
            resets.close(keep=False)
            conns.close(keep=False)
    return sorted((directory / "resets").glob("*.parquet")) + sorted((directory / "connections").glob("*.parquet"))
