"""The fields a stitched capture adds to the document's rows (none for a capture of one file).

A reset: ``file`` and ``file_frame`` (where its global ``frame`` is).  A connection: ``file`` and
``file_frame`` of its ``first_frame``, ``last_file`` and ``last_file_frame`` of its ``last_frame``.
A capture: ``host`` and ``pieces`` (each piece's path, first global frame, records, TCP packets,
first and last TCP timestamps).  Existing fields keep their meaning: ``frame`` is the frame of the
merged file (``mergecap -a`` of the pieces in order).
"""

from __future__ import annotations

_NONE: dict = {}


def _frames(capture):
    pieces = getattr(capture, "pieces", None)
    return capture.frames if pieces else None


def reset_fields(capture, frame: int) -> dict:
    frames = _frames(capture)
    if frames is None:
        return _NONE
    path, in_file = frames.locate(frame)
    return {"file": _text(path), "file_frame": in_file}


def connection_fields(capture, first_frame: int, last_frame: int) -> dict:
    frames = _frames(capture)
    if frames is None:
        return _NONE
    first, first_in = frames.locate(first_frame)
    last, last_in = frames.locate(last_frame)
    return {"file": _text(first), "file_frame": first_in, "last_file": _text(last), "last_file_frame": last_in}


def capture_fields(capture) -> dict:
    if not getattr(capture, "pieces", None):
        return _NONE
    pieces = [span.row() | {"path": _text(span.path)} for span in capture.pieces]
    return {"host": _text(capture.host), "pieces": pieces}


def _text(name: str) -> str:
    """A file name as valid Unicode (undecodable bytes as ``\\xNN``), as ``document._text`` writes
    capture paths: these fields go straight to JSON and Parquet."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
