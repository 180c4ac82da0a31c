"""The fields a stitched capture adds to the document's rows (none for a capture of one file).

A reset: ``file`` and ``file_frame`` (where its global ``frame`` is).  A connection: ``file`` and
``file_frame`` of its ``first_frame``, ``last_file`` and ``last_file_frame`` of its ``last_frame``.
A capture: ``host`` and ``pieces`` (each piece's path, first global frame, records, TCP packets,
first and last TCP timestamps).  Existing fields keep their meaning: ``frame`` is the frame of the
merged file (``mergecap -a`` of the pieces in order).  The rows are extended in place: for a capture
of one file this costs one attribute lookup per row.
"""

from __future__ import annotations

import functools


def add_reset_fields(row: dict, capture, frame: int) -> None:
    if getattr(capture, "pieces", None):
        path, in_file = capture.frames.locate(frame)
        row["file"], row["file_frame"] = text(path), in_file


def add_connection_fields(row: dict, capture, first_frame: int, last_frame: int) -> None:
    if getattr(capture, "pieces", None):
        first, first_in = capture.frames.locate(first_frame)
        last, last_in = capture.frames.locate(last_frame)
        row |= {"file": text(first), "file_frame": first_in, "last_file": text(last), "last_file_frame": last_in}


def connection_file_columns(capture, first_frames, last_frames) -> list[tuple[str, str, object, object]]:
    """:func:`add_connection_fields` for many rows at once: per pair of fields, in the rows' order, their
    names, each row's piece (an index into ``capture.pieces``) and each row's frame in that file."""
    first, first_in = capture.frames.locate_all(first_frames)
    last, last_in = capture.frames.locate_all(last_frames)
    return [("file", "file_frame", first, first_in), ("last_file", "last_file_frame", last, last_in)]


def add_capture_fields(row: dict, capture) -> None:
    if getattr(capture, "pieces", None):
        row["host"] = text(capture.host)
        row["pieces"] = [span.row() | {"path": text(span.path)} for span in capture.pieces]


@functools.lru_cache(maxsize=1024)  # a capture has few pieces and one host, named again in every row
def text(name: str) -> str:
    """A file name as valid Unicode (undecodable bytes as ``\\xNN``), as ``document._text`` writes
    capture paths: these fields go straight to JSON and Parquet."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
