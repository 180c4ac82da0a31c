"""Fleets of captures: rotated pieces stitched into one capture, tracked on all cores or a Dask cluster.

Layout (the pipeline, left to right)::

    pieces.py   names (DIR, GLOB, FILE...) -> Piece (link type, interfaces, host, first timestamp)
                -> groups of pieces that may be one capture
    stitch.py   the pieces of one capture read as one: chunks in global frame order, a FrameMap from a
                global frame back to (file, frame in file), one Analysis per capture
    shards.py   --jobs N: decode pieces in N processes, partition rows by connection, track each shard
                in its own process in lockstep
    merge.py    a shard's stages after tracking (global ids, evidence, verdicts, encoded rows); the
                parent's merge into the single-process result
    cluster.py  --dask ADDRESS: the same shard work as dask.distributed tasks
    parquet.py  --parquet DIR: resets and connections as Parquet, one file per piece; the fleet view
    progress.py pieces done of total, packets/s, time left (stderr, on a terminal)
    timing.py   per-process phase times for benchmarks/fleet.py --breakdown (off by default)
"""
