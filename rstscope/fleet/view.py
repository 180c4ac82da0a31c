"""The fleet view: ``rstscope report DIR`` over the Parquet files of ``analyze --parquet DIR``.

Resets by verdict per host and per hour (UTC), the connections that lost the most data in flight,
and two figures (resets per hour and per host, by verdict).  It reads only the Parquet files (the
columns it needs; of the connections, only those that lost data), never the captures, and returns
report blocks that :mod:`rstscope.report.html` and :mod:`rstscope.report.markdown` render.
"""

from __future__ import annotations

from pathlib import Path

from rstscope.report import sections as S
from rstscope.status import InputError
from rstscope.verdicts import Verdict

RESET_COLUMNS = ["host", "file", "time", "verdict", "primary"]
WORST_COLUMNS = ["host", "file", "file_frame", "client", "server", "verdict", "in_flight_at_reset", "start"]


def is_fleet_dir(path: str | Path) -> bool:
    """Whether ``path`` is the output of ``analyze --parquet``."""
    p = Path(path)
    return p.is_dir() and any((p / "resets").glob("*.parquet")) and (p / "connections").is_dir()


def load(directory: Path):
    """(resets, worst-connection candidates) as pandas DataFrames."""
    try:
        import pyarrow.dataset as ds
    except ImportError:
        raise InputError("reading a --parquet directory needs pyarrow: pip install 'rstscope[fleet]'") from None
    resets = ds.dataset(directory / "resets", format="parquet").to_table(columns=RESET_COLUMNS).to_pandas()
    conns = ds.dataset(directory / "connections", format="parquet")
    lost = conns.to_table(columns=WORST_COLUMNS, filter=ds.field("lost_data")).to_pandas()
    return resets, lost


def _order(verdicts) -> list[str]:
    known = [v.value for v in Verdict]
    return sorted(set(verdicts), key=lambda v: (known.index(v) if v in known else len(known), v))


def _count_table(frame, by: str, label: str, max_rows: int) -> S.Table:
    counts = frame.groupby([by, "verdict"]).size().unstack(fill_value=0)
    verdicts = _order(counts.columns)
    counts = counts[verdicts]
    rows = [(str(index), *(f"{int(n):,}" for n in row), f"{int(sum(row)):,}") for index, row in counts.iterrows()]
    notice = f"{len(rows) - max_rows:,} more rows: query the Parquet files" if len(rows) > max_rows else ""
    return S.Table(columns=(label, *verdicts, "total"), rows=tuple(rows[:max_rows]), notice=notice,
                   numeric=frozenset(range(1, len(verdicts) + 2)))  # fmt: skip


def blocks(directory: Path, *, max_rows: int = 200) -> list[S.Block]:
    resets, lost = load(directory)
    resets["hour"] = (resets["time"] // 3600 * 3600).astype("int64")
    import pandas as pd

    resets["hour"] = pd.to_datetime(resets["hour"], unit="s", utc=True).dt.strftime("%Y-%m-%d %H:00")
    hosts = sorted(set(resets["host"]))
    out: list[S.Block] = [S.Heading(level=1, text=f"rstscope fleet report: {directory}")]
    span = ""
    if len(resets):
        span = f" between {resets['hour'].min()} and {resets['hour'].max()} UTC"
    out.append(S.Paragraph(kind="lead", text=(
        f"{len(resets):,} RSTs in {resets['file'].nunique():,} capture pieces of "
        f"{len(hosts) or 1:,} host{'s' if len(hosts) > 1 else ''}{span}; "
        f"{len(lost):,} connections lost data in flight."
    )))  # fmt: skip
    if not len(resets):
        return out
    out.append(S.Heading(level=2, text="Resets by verdict per host", anchor="hosts"))
    out.append(_count_table(resets.assign(host=resets["host"].replace("", "(one host)")), "host", "host", max_rows))
    out.append(S.Heading(level=2, text="Resets by verdict per hour", anchor="hours"))
    out.append(_count_table(resets, "hour", "hour (UTC)", max_rows))
    out.append(S.FigureBlock(name="resets-per-hour", caption="RSTs per hour, by verdict (UTC)",
                             make=lambda: _bars(resets, "hour")))  # fmt: skip
    if len(hosts) > 1:
        out.append(S.FigureBlock(name="resets-per-host", caption="RSTs per host, by verdict",
                                 make=lambda: _bars(resets, "host")))  # fmt: skip
    out.append(S.Heading(level=2, text="The connections that lost the most data", anchor="worst"))
    worst = lost.sort_values(["in_flight_at_reset", "start"], ascending=[False, True]).head(max_rows)
    rows = tuple(
        (r.host or "", S.Code(f"{Path(r.file).name}#{r.file_frame}"), r.client, r.server, r.verdict,
         f"{int(r.in_flight_at_reset or 0):,}")
        for r in worst.itertuples()
    )  # fmt: skip
    notice = f"{len(lost) - len(worst):,} more: query the Parquet files" if len(lost) > len(worst) else ""
    out.append(S.Table(columns=("host", "file#frame", "client", "server", "verdict", "bytes in flight"), rows=rows,
                       notice=notice, numeric=frozenset({5})))  # fmt: skip
    return out


def _bars(resets, by: str):
    from matplotlib.figure import Figure

    counts = resets.groupby([by, "verdict"]).size().unstack(fill_value=0)
    counts = counts[_order(counts.columns)]
    fig = Figure(figsize=(10, 4.2), layout="constrained")
    ax = fig.add_subplot()
    bottom = None
    for verdict in counts.columns:
        values = counts[verdict].to_numpy()
        ax.bar(range(len(counts)), values, bottom=bottom, label=verdict)
        bottom = values if bottom is None else bottom + values
    step = max(1, len(counts) // 24)
    ax.set_xticks(range(0, len(counts), step), [str(x) for x in counts.index[::step]], rotation=45, ha="right")
    ax.set_ylabel("RSTs")
    ax.legend(fontsize=8, ncols=2)
    return fig
