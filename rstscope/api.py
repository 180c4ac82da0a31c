"""The Python API, for notebooks and scripts.

    >>> from rstscope import api
    >>> result = api.analyze("captures/close-race/capture.pcapng")   # a capture or a lab run directory
    >>> result.verdict_counts()
    >>> api.resets_frame(result)           # pandas DataFrame, one row per RST
    >>> api.connections_frame(result)      # one row per connection
    >>> api.document(result)               # the JSON document, as a dict

The records are the same as ``rstscope analyze --json`` prints.
"""

from __future__ import annotations

import os
from pathlib import Path

from rstscope.analysis import Analysis, analyze_capture
from rstscope.document import combine
from rstscope.status import InputError

__all__ = ["Analysis", "analyze", "connections_frame", "document", "resets_frame"]


def analyze(path: str | os.PathLike, *, progress=None, judged=None, zeek_timers: bool = False, stream=None,
            encode_rows: bool = False) -> Analysis:  # fmt: skip
    """Analyse a capture file, or a lab run directory (its capture plus kernel records and client logs).

    ``zeek_timers``: end connections where Zeek's timers would, so that they line up with conn.log.
    ``stream``: an open binary stream holding the capture (standard input, a FIFO), named by ``path``.
    ``progress`` and ``judged``: told how far reading and judging are (see :func:`analyze_capture`).
    ``encode_rows``: the caller writes every connection's document row, once (``--json``: see
    :func:`analyze_capture`)."""
    p = Path(path)
    if stream is not None:
        return analyze_capture(p, progress=progress, judged=judged, zeek_timers=zeek_timers, stream=stream)
    if _is_dir(p):
        from rstscope.lab import rundir

        if not rundir.is_run_dir(p):
            raise InputError(f"{p}: a directory, but not a rstscope run directory (no run.json)")
        run = rundir.load_run(p)
        if run.capture is None:
            raise InputError(f"{p}: run directory without a capture file (the capture step failed: see run.json)")
        analysis = analyze_capture(run.capture, progress=progress, judged=judged, zeek_timers=zeek_timers)
        analysis.run = run
        return analysis
    return analyze_capture(p, progress=progress, judged=judged, zeek_timers=zeek_timers, encode_rows=encode_rows)


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except PermissionError:  # a file under a directory we may not search
        raise InputError(f"{path}: permission denied") from None


def document(result: Analysis | dict) -> dict:
    """The JSON document of an analysis (a dict passes through)."""
    return result if isinstance(result, dict) else combine([result])


def resets_frame(result: Analysis | dict):
    """One row per RST (pandas DataFrame), columns as in the JSON ``resets`` records."""
    import pandas as pd

    return pd.DataFrame(document(result)["resets"])


def connections_frame(result: Analysis | dict):
    """One row per connection (pandas DataFrame); nested per-side counts become ``packets.client`` etc."""
    import pandas as pd

    return pd.json_normalize(document(result)["connections"])
