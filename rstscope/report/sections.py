"""What the report says, as plain blocks that :mod:`.html` and :mod:`.markdown` render alike.

The report's sections (:func:`single_report`, :func:`compare_report`) and its inputs (:func:`load`).
What they read from the analysis document (outcomes, stream indices, example connections) is in
:mod:`.records`, which :mod:`.plots` reads too; this module never looks at packets.

Blocks are small frozen dataclasses (:class:`Heading`, :class:`Paragraph`,
:class:`Bullets`, :class:`Table`, :class:`FigureBlock`).  Inline text is a
``str``, a :class:`Code` span, or a tuple of both.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rstscope.document import distinct_fixes
from rstscope.packets import describe_undecoded
from rstscope.report.records import (
    LISTEN_COUNTERS,
    example_connections,
    first_syn_time,
    format_bytes,
    kernel_counters,
    listen_queue_trouble,
    plural,
    stream_indices,
)
from rstscope.status import InputError
from rstscope.verdicts import Verdict

# --------------------------------------------------------------------------------------------- inputs


@dataclass(frozen=True, kw_only=True)
class Loaded:
    """One analysed input: its document and the name the report gives it."""

    label: str
    """Scenario name for a lab run, else the capture's file name."""
    source: Path
    """The capture file or run directory as given."""
    doc: dict
    """The analysis document (``api.document()``; a run directory adds ``ground_truth``)."""


def expand_inputs(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """The inputs to analyse.  A directory that is not a run directory but holds run directories
    (what ``lab --compare`` leaves, or any folder with two runs) stands for the runs in it, by name."""
    from rstscope.lab import rundir

    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir() and not rundir.is_run_dir(path):
            runs = sorted(p for p in path.iterdir() if p.is_dir() and rundir.is_run_dir(p))
            if not runs:
                raise InputError(f"{path}: a directory without run.json, and no run directories inside it")
            out.extend(runs)
        else:
            out.append(path)
    return out


def load(paths: Sequence[str | os.PathLike], *, progress: Callable[[str], None] | None = None) -> list[Loaded]:
    """Analyse each input (capture file or run directory) and name it."""
    from rstscope import api

    loaded = []
    for path in expand_inputs(paths):
        if progress:
            progress(f"analysing {path}")
        doc = api.document(api.analyze(path))
        loaded.append(Loaded(label=input_label(doc, path), source=path, doc=doc))
    return loaded


def input_label(doc: dict, path: Path) -> str:
    gt = doc.get("ground_truth") or {}
    label = str(gt.get("scenario") or (path.name if path.is_dir() else path.stem))
    # A file name that is not UTF-8 holds surrogates, which no font or file encoding takes: show its bytes.
    return label.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


# --------------------------------------------------------------------------------------------- blocks


@dataclass(frozen=True)
class Code:
    """Inline code (a Wireshark filter, a field value)."""

    text: str


Text = str | Code | tuple[str | Code, ...]


@dataclass(frozen=True, kw_only=True)
class Heading:
    level: int
    text: str
    anchor: str = ""


@dataclass(frozen=True, kw_only=True)
class Paragraph:
    text: Text
    kind: str = ""
    """``lead`` for the headline sentence, ``note`` for small print, else empty."""


@dataclass(frozen=True, kw_only=True)
class Bullets:
    items: tuple[Text, ...]


@dataclass(frozen=True, kw_only=True)
class Table:
    columns: tuple[str, ...]
    rows: tuple[tuple[Text, ...], ...]
    notice: str = ""
    """Shown under the table when rows were left out (and says where to find them)."""
    numeric: frozenset[int] = frozenset()
    """Indices of right-aligned columns."""


@dataclass(frozen=True, kw_only=True)
class FigureBlock:
    name: str
    """File stem when the figure is written beside the Markdown."""
    caption: str
    make: Callable[[], object] = field(compare=False, repr=False)
    """Builds the matplotlib Figure; :meth:`draw` calls it once, however many renderers ask."""
    _cache: list = field(default_factory=list, compare=False, repr=False)

    def draw(self):
        """The figure (built on first use, then reused by the HTML and the Markdown renderers)."""
        if not self._cache:
            self._cache.append(self.make())
        return self._cache[0]


Block = Heading | Paragraph | Bullets | Table | FigureBlock


# ----------------------------------------------------------------------------------- single report

MAX_ROWS = 200
"""Rows of the per-RST and lost-connection tables before the rest is cut (with a notice)."""


def single_report(loaded: Loaded, *, examples: int = 3, max_rows: int = MAX_ROWS, level: int = 1,
                  connections: Sequence[dict] = ()) -> list[Block]:  # fmt: skip
    """The report of one capture or run: summary, verdicts, figures, lost connections, evidence per RST,
    kernel agreement (runs), fixes.  ``connections`` adds their time-sequence graphs to the examples."""
    from rstscope.report import plots

    doc = loaded.doc
    h = level
    blocks: list[Block] = [Heading(level=h, text=f"rstscope report: {loaded.label}", anchor=slug(loaded.label))]
    inputs = ", ".join(c["path"] for c in doc["captures"])
    blocks.append(Paragraph(text=("Input: ", Code(str(loaded.source)), f" (capture {inputs}); {doc['tool']}."),
                            kind="note"))  # fmt: skip
    sentences = summary_sentences(doc)
    blocks.append(Heading(level=h + 1, text="Summary"))
    blocks.append(Paragraph(text=sentences[0], kind="lead"))
    if len(sentences) > 1:
        blocks.append(Bullets(items=tuple(sentences[1:])))
    table = verdict_table(doc)
    if table is not None:
        blocks.append(Heading(level=h + 1, text="RSTs by verdict"))
        blocks.append(table)

    blocks.append(Heading(level=h + 1, text="Figures"))
    if doc["connections"]:
        blocks.append(FigureBlock(name="overview", caption="Every connection from its first packet to its last, "
                                  "coloured by outcome, with its RSTs marked.",
                                  make=lambda: plots.overview_figure(doc, label=loaded.label)))  # fmt: skip
    if listen_queue_trouble(doc):
        blocks.append(FigureBlock(name="listen-queue", caption="Handshakes along time: SYNs, retransmissions, "
                                  "SYN→SYN-ACK delay, and the server's listen-queue counters when known.",
                                  make=lambda: plots.listen_queue_figure(doc, label=loaded.label)))  # fmt: skip
    chosen = list(connections) + [c for c in example_connections(doc, examples) if c not in connections]
    ranks = stream_indices(doc)
    for conn in chosen:
        stream = ranks[(conn.get("capture", 0), conn["id"])]
        blocks.append(FigureBlock(
            name=f"connection-{conn['id']}",
            caption=f"Time-sequence graph of connection {conn['id']} ({conn['client']} → {conn['server']}, "
                    f"tcp.stream eq {stream}): data segments, the peer's ACKs, the sender's snd_nxt, FIN and RST.",
            make=lambda c=conn: plots.time_sequence_figure(doc, c),
        ))  # fmt: skip
    if not doc["connections"]:
        blocks.append(Paragraph(text="No TCP connection in this capture: nothing to draw."))

    blocks.extend(lost_connections_section(doc, level=h + 1, max_rows=max_rows))
    blocks.extend(evidence_section(doc, level=h + 1, max_rows=max_rows))
    if doc.get("ground_truth"):
        blocks.extend(kernel_section(doc, level=h + 1))
    blocks.extend(fix_section(doc, level=h + 1))
    return blocks


def slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text.lower()).strip("-")


def summary_sentences(doc: dict) -> list[Text]:
    """The summary in plain words; the first sentence is the headline."""
    s = doc["summary"]
    by_verdict: dict[str, int] = s.get("by_verdict") or {}
    conns = doc["connections"]
    span = max((c["end"] for c in conns), default=0.0) - first_syn_time(doc)
    out: list[Text] = []
    lost = [c for c in conns if c["lost_data"]]
    primaries = {v: n for v, n in by_verdict.items() if v != Verdict.ECHO.value}
    gt = doc.get("ground_truth") or {}
    outcomes: dict[str, int] = gt.get("client_outcomes") or {}
    attempts = gt.get("client_attempts") or sum(outcomes.values())
    resets_seen = sum(n for o, n in outcomes.items() if str(o).startswith("ECONNRESET"))

    if lost:
        kinds = Counter(c["verdict"] for c in lost)
        what = " and ".join(f"{n} by {_VERDICT_PHRASE.get(v, v)}" for v, n in kinds.most_common())
        out.append(f"{plural(len(lost), 'connection')} of {len(conns)} lost data: {what}, with "
                   f"{format_bytes(s['bytes_in_flight_at_loss'])} in flight at those resets.")  # fmt: skip
    elif primaries:
        top = max(primaries, key=lambda v: primaries[v])
        out.append(f"No connection lost data in flight; the RSTs are {_list_counts(primaries)} "
                   f"(mostly {top}: {Verdict(top).definition[0].lower()}{Verdict(top).definition[1:]})")  # fmt: skip
    elif s["resets"]:
        out.append(f"{plural(s['resets'], 'RST')}, all echoes of resets outside the capture.")
    elif doc.get("undecoded"):  # never "nothing was reset" about packets that were not read
        out.append(f"No RST in {plural(len(conns), 'decoded connection')}; {describe_undecoded(doc['undecoded'])}.")
    else:
        out.append(f"No RST in {plural(len(conns), 'connection')}: nothing was reset.")

    out.append(f"The capture holds {s['packets']:,} packets ({s['tcp_packets']:,} TCP) in "
               f"{plural(len(conns), 'TCP connection')} over {span:.2f} s.")  # fmt: skip
    if s["resets"]:
        echoes = by_verdict.get(Verdict.ECHO.value, 0)
        primary_count = s["resets"] - echoes
        text = f"{plural(s['resets'], 'RST')} in {plural(s['connections_reset'], 'connection')}: "
        text += f"{primary_count:,} primary"
        if echoes:
            text += (f" and {echoes:,} echoes (replies to segments that reached a side after it had reset; "
                     "each belongs to its primary and is not a new failure)")  # fmt: skip
        out.append(text + ".")
    for verdict in Verdict:
        n = primaries.get(verdict.value)
        if n and verdict is not Verdict.ECHO:
            out.append(f"{verdict.value} ({plural(n, 'RST')}): {verdict.definition}")
    if attempts:
        detail = ", ".join(f"{o} {n}" for o, n in sorted(outcomes.items(), key=lambda kv: -kv[1]))
        out.append(f"Clients (lab run): {resets_seen} of {plural(attempts, 'attempt')} ended with ECONNRESET "
                   f"({detail}).")  # fmt: skip
    agreement = gt.get("kernel_agreement")
    if agreement is not None:
        out.append(f"The kernel's own reset records (tcp_send_reset) agree with {agreement:.0%} of the "
                   f"{gt.get('resets_matched', 0)} RSTs matched to one.")  # fmt: skip
    lq = doc.get("listen_queue") or {}
    trouble = [(lq.get("syn_retransmitted", 0), "with the SYN retransmitted"),
               (lq.get("synack_after_ack", 0), "with the SYN-ACK resent after the client's ACK "
                                               "(an accept-queue drop is suspected)"),
               (lq.get("unanswered", 0), "never answered")]  # fmt: skip
    trouble = [(n, what) for n, what in trouble if n]
    if trouble:
        out.append("Listen queue: " + "; ".join(f"{plural(n, 'connection')} {what}" for n, what in trouble) + ".")
    counters = kernel_counters(doc, names=LISTEN_COUNTERS)
    if counters:
        out.append("Server listen-queue counters during the run: "
                   + ", ".join(f"{k.removeprefix('TcpExt')} +{v}" for k, v in counters.items()) + ".")  # fmt: skip
    return out


_VERDICT_PHRASE = {
    "close-race": "a close race (the sender aborted with data in flight)",
    "backlog": "a listen-backlog overflow (the server never accepted them)",
}


def _list_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {v}" for v, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def verdict_table(doc: dict) -> Table | None:
    by_verdict = doc["summary"].get("by_verdict") or {}
    if not by_verdict:
        return None
    per_conn = Counter(c["verdict"] for c in doc["connections"] if c.get("verdict"))
    rows = []
    for verdict in Verdict:
        n = by_verdict.get(verdict.value, 0)
        if n:
            conns = per_conn.get(verdict.value, 0)
            rows.append((Code(verdict.value), f"{n:,}", f"{conns:,}", verdict.definition))
    return Table(columns=("verdict", "RSTs", "connections", "meaning"), rows=tuple(rows),
                 numeric=frozenset({1, 2}))  # fmt: skip


def lost_connections_section(doc: dict, *, level: int, max_rows: int = MAX_ROWS) -> list[Block]:
    lost = sorted((c for c in doc["connections"] if c["lost_data"]),
                  key=lambda c: (-(c["in_flight_at_reset"] or 0), c["id"]))  # fmt: skip
    blocks: list[Block] = [Heading(level=level, text="Connections that lost data")]
    if not lost:
        blocks.append(Paragraph(text="None: no connection was reset with data at risk."))
        return blocks
    ranks = stream_indices(doc)
    has_client = any("client_outcome" in c for c in lost)
    columns = ["connection", "client → server", "verdict", "in flight at reset"]
    if has_client:
        columns += ["client saw", "client read"]
    columns.append("Wireshark filter")
    rows = []
    for c in lost[:max_rows]:
        row: list[Text] = [str(c["id"]), f"{c['client']} → {c['server']}", Code(c["verdict"]),
                           format_bytes(c["in_flight_at_reset"])]  # fmt: skip
        if has_client:
            row.append(c.get("client_outcome") or "–")
            read, expected = c.get("client_bytes_read"), c.get("client_bytes_expected")
            row.append(f"{format_bytes(read)} of {format_bytes(expected)}" if read is not None else "–")
        row.append(Code(f"tcp.stream eq {ranks[(c.get('capture', 0), c['id'])]}"))
        rows.append(tuple(row))
    notice = ""
    if len(lost) > max_rows:
        notice = f"{len(lost) - max_rows} more connections not listed: see `rstscope analyze --json`."
    blocks.append(Table(columns=tuple(columns), rows=tuple(rows), notice=notice, numeric=frozenset({0, 3})))
    if len(doc["captures"]) > 1:
        blocks.append(Paragraph(text="Several captures: tcp.stream numbers are per capture.", kind="note"))
    return blocks


def evidence_section(doc: dict, *, level: int, max_rows: int = MAX_ROWS) -> list[Block]:
    resets = doc["resets"]
    blocks: list[Block] = [Heading(level=level, text="Evidence per RST")]
    if not resets:
        undecoded = describe_undecoded(doc.get("undecoded") or {})
        text = f"No RST in the decoded packets; {undecoded}." if undecoded else "No RST in the capture."
        blocks.append(Paragraph(text=text))
        return blocks
    primaries = [r for r in resets if r["verdict"] != Verdict.ECHO.value]
    echoes = len(resets) - len(primaries)
    t0 = first_syn_time(doc)
    ranks = stream_indices(doc)
    with_kernel = any("kernel" in r for r in resets)
    rows = []
    for r in primaries[:max_rows]:
        basis = f" ({r['in_flight_basis']})" if r.get("in_flight_basis") not in (None, "capture") else ""
        stream = ranks.get((r.get("capture", 0), r["connection"])) if r.get("connection") is not None else None
        filters: tuple[str | Code, ...] = (Code(r["wireshark_filter"]),)
        if stream is not None:
            filters += (" ", Code(f"tcp.stream eq {stream}"))
        row: list[Text] = [
            str(r["frame"]), f"{r['time'] - t0:.3f}", f"{r['sender']} {r['src']}", Code(r["verdict"]),
            f"{r.get('origin', '?')}, {r.get('confidence', '?')}", f"{format_bytes(r['in_flight'])}{basis}",
            str(r["echoes"]),
            (r["explanation"], " Evidence: ", Code(", ".join(r["findings"]) or "none"), f"; rule {r['rule']}."),
        ]  # fmt: skip
        if with_kernel:
            k = r.get("kernel")
            if k:
                mark = "agrees" if r.get("kernel_agrees") else "DISAGREES"
                listener = "/LISTEN" if k.get("listener") else ""
                row.append((Code(f"{k.get('reason')}{listener}"), f" {mark}"))
            else:
                row.append("no record")
        row.append(filters)
        rows.append(tuple(row))
    columns = ["frame", "t (s)", "sender", "verdict", "origin, confidence", "in flight", "echoes", "explanation"]
    if with_kernel:
        columns.append("kernel reason")
    columns.append("Wireshark filter")
    notice_parts = []
    if echoes:
        notice_parts.append(f"{plural(echoes, 'echo RST')} not listed: each is counted under its primary "
                            "(`rstscope analyze --all` lists them).")  # fmt: skip
    if len(primaries) > max_rows:
        notice_parts.append(f"{len(primaries) - max_rows} more RSTs not listed: `rstscope analyze --csv` has all.")
    blocks.append(Paragraph(text=("Time is seconds since the first SYN. Open one RST in Wireshark with its "
                                  "display filter (", Code("frame.number == N"), "), or its whole connection ("
                                  , Code("tcp.stream eq N"), ")."), kind="note"))  # fmt: skip
    blocks.append(Table(columns=tuple(columns), rows=tuple(rows), notice=" ".join(notice_parts),
                        numeric=frozenset({0, 1, 6})))  # fmt: skip
    return blocks


def kernel_section(doc: dict, *, level: int) -> list[Block]:
    gt = doc["ground_truth"]
    blocks: list[Block] = [Heading(level=level, text="Agreement with the kernel (lab run)")]
    sends = gt.get("kernel_resets", 0)
    if not sends and not gt.get("resets"):
        blocks.append(Paragraph(text="The kernel logged no reset and the capture holds none: they agree."))
    elif not sends:
        blocks.append(Paragraph(text="No kernel reset records in this run (no tracefs): only the capture speaks."))
    else:
        primary, echo, origin = (gt.get(k) for k in ("kernel_agreement", "echo_agreement", "origin_agreement"))
        figures = [
            f"{label} {value:.0%}"
            for label, value in (("primary RSTs", primary), ("echoes", echo), ("origin", origin))
            if value is not None
        ]
        blocks.append(Paragraph(text=(
            f"The kernel logged {plural(sends, 'reset')} (tracepoint ", Code("tcp:tcp_send_reset"), "); "
            f"{gt.get('resets_matched', 0)} of {plural(gt.get('resets', 0), 'RST')} in the capture were matched to "
            "one by sender and order. Each RST's ground truth (the kernel's reason, or the router's record for a "
            "RST no endpoint sent, with the wire facts that tell the cases apart) means one verdict; agreement: "
            + ("; ".join(figures) if figures else "nothing to score") + "."
            + (f" {gt.get('kernel_unmatched')} kernel records found no packet." if gt.get("kernel_unmatched") else "")
        )))  # fmt: skip
        pairs: Counter = Counter()
        agree: Counter = Counter()
        for r in doc["resets"]:
            t = r.get("truth")
            if not t:
                continue
            key = (t.get("reason") or "?", t.get("verdict") or "?", r["verdict"])
            pairs[key] += 1
            agree[key] += bool(r.get("kernel_agrees"))
        rows = tuple(
            (Code(reason), Code(truth), Code(verdict), f"{n:,}", "yes" if agree[key] == n else f"{agree[key]} of {n}")
            for key, n in pairs.most_common() for reason, truth, verdict in (key,)
        )  # fmt: skip
        if rows:
            blocks.append(Table(columns=("ground truth", "means", "rstscope verdict", "RSTs", "agree"), rows=rows,
                                numeric=frozenset({3})))  # fmt: skip
    outcomes = gt.get("client_outcomes") or {}
    if outcomes:
        blocks.append(Paragraph(text="What the clients saw (clients.jsonl):"))
        blocks.append(Table(columns=("client outcome", "attempts"),
                            rows=tuple((Code(str(o)), f"{n:,}") for o, n in outcomes.items()),
                            numeric=frozenset({1})))  # fmt: skip
    for side in ("server", "client"):
        counters = kernel_counters(doc, side)
        if counters:
            blocks.append(Paragraph(text=(f"{side.capitalize()} namespace counter deltas (nstat): ",
                                          ", ".join(f"{k} +{v}" for k, v in counters.items()), ".")))  # fmt: skip
    return blocks


def fix_section(doc: dict, *, level: int) -> list[Block]:
    by_verdict = doc["summary"].get("by_verdict") or {}
    fixes = distinct_fixes(doc)
    blocks: list[Block] = [Heading(level=level, text="Recommended fix")]
    if not fixes:
        text = "Nothing to fix: no reset with a known cause."
        if by_verdict.get(Verdict.UNKNOWN.value):
            text = Verdict.UNKNOWN.fix
        blocks.append(Paragraph(text=text))
        return blocks
    blocks.append(Bullets(items=tuple((Code(verdict), f": {fix}") for verdict, fix in fixes)))
    return blocks


# ---------------------------------------------------------------------------------- compare report


def compare_rows(a: dict, b: dict) -> list[tuple[str, str, str]]:
    """The side-by-side numbers of two documents."""

    def numbers(doc: dict) -> dict[str, str]:
        s = doc["summary"]
        gt = doc.get("ground_truth") or {}
        outcomes = gt.get("client_outcomes") or {}
        attempts = gt.get("client_attempts") or sum(outcomes.values())
        reset = sum(n for o, n in outcomes.items() if str(o).startswith("ECONNRESET"))
        out = {
            "connections": f"{s['connections']:,}",
            "RSTs": f"{s['resets']:,}",
            "connections that lost data": f"{s['connections_lost_data']:,}",
            "bytes in flight at those resets": format_bytes(s["bytes_in_flight_at_loss"]),
        }
        if attempts:
            out["clients with ECONNRESET"] = f"{reset} of {attempts}"
            out["client outcomes"] = ", ".join(f"{o} {n}" for o, n in outcomes.items())
        if gt.get("kernel_agreement") is not None:
            truths = [r.get("truth") for r in doc["resets"] if r.get("truth")]
            primaries = sum(1 for t in truths if not t.get("echo"))
            out["agreement with the ground truth"] = (
                f"primary {gt['kernel_agreement']:.0%} of {primaries}; echoes "
                + (f"{gt['echo_agreement']:.0%} of {len(truths) - primaries}" if gt.get("echo_agreement") is not None
                   else "none")
            )  # fmt: skip
        for verdict in Verdict:
            n = (s.get("by_verdict") or {}).get(verdict.value)
            if n:
                out[f"RSTs: {verdict.value}"] = f"{n:,}"
        return out

    left, right = numbers(a), numbers(b)
    keys = list(dict.fromkeys([*left, *right]))
    return [(k, left.get(k, "0" if k.startswith("RSTs:") else "–"), right.get(k, "0" if k.startswith("RSTs:") else "–"))
            for k in keys]  # fmt: skip


def compare_report(a: Loaded, b: Loaded, *, examples: int = 1, max_rows: int = MAX_ROWS) -> list[Block]:
    from rstscope.report import plots

    blocks: list[Block] = [Heading(level=1, text=f"rstscope comparison: {a.label} vs {b.label}")]
    blocks.append(Paragraph(text=("Inputs: ", Code(str(a.source)), " and ", Code(str(b.source)), "."), kind="note"))
    blocks.append(Paragraph(text=compare_headline(a, b), kind="lead"))
    rows = compare_rows(a.doc, b.doc)
    blocks.append(Table(columns=("", a.label, b.label), rows=tuple(rows), numeric=frozenset({1, 2})))
    blocks.append(FigureBlock(name="comparison", caption=f"{a.label} and {b.label} side by side: connections along "
                              "time, RSTs by verdict, and what the clients saw.",
                              make=lambda: plots.comparison_figure(a.doc, b.doc, a.label, b.label)))  # fmt: skip
    for item in (a, b):
        blocks.extend(single_report(item, examples=examples, max_rows=max_rows, level=2))
    return blocks


def compare_headline(a: Loaded, b: Loaded) -> str:
    def phrase(item: Loaded) -> str:
        s = item.doc["summary"]
        gt = item.doc.get("ground_truth") or {}
        outcomes = gt.get("client_outcomes") or {}
        attempts = gt.get("client_attempts") or sum(outcomes.values())
        text = f"{item.label}: {plural(s['connections_lost_data'], 'connection')} lost data"
        if attempts:
            reset = sum(n for o, n in outcomes.items() if str(o).startswith("ECONNRESET"))
            text += f", {reset} of {plural(attempts, 'client attempt')} got ECONNRESET"
        return text + f" ({plural(s['resets'], 'RST')})"

    return f"{phrase(a)}; {phrase(b)}."
