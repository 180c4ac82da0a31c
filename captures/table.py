"""Demonstrates reading the sample run directories: prints (or, with --write, updates) the table of
captures/README.md from each sample's analysis.json, clients.jsonl and file sizes.

    .venv/bin/python captures/table.py            # print the table
    .venv/bin/python captures/table.py --write    # replace the table in captures/README.md
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
BEGIN, END = "<!-- samples table: begin (captures/table.py --write) -->", "<!-- samples table: end -->"
ORDER = (
    "close-race", "lingering", "linger0", "late-data", "backlog", "backlog-silent", "refused", "clean",
    "firewall-reject", "firewall-syn", "conntrack-idle", "inject", "ignored", "keepalive", "shutdown-close", "late-fin",
)  # fmt: skip


def rows() -> list[str]:
    from rstscope.lab.scenarios import PRESETS

    out = [
        "| preset | what it shows | packets | RSTs by verdict | clients with ECONNRESET | size |",
        "|---|---|---:|---|---:|---:|",
    ]
    names = [n for n in ORDER if (HERE / n / "run.json").is_file()]
    names += sorted(p.name for p in HERE.iterdir() if (p / "run.json").is_file() and p.name not in names)
    for name in names:
        run = HERE / name
        doc = json.loads((run / "analysis.json").read_text())
        clients = [json.loads(line) for line in (run / "clients.jsonl").read_text().splitlines() if line.strip()]
        clients = [c for c in clients if "attempt" in c]
        outcomes = Counter(c.get("outcome") for c in clients)
        reset = sum(n for o, n in outcomes.items() if str(o).startswith("ECONNRESET"))
        verdicts = ", ".join(f"{v} {n}" for v, n in doc["summary"]["by_verdict"].items()) or "none"
        size = sum(p.stat().st_size for p in run.iterdir() if p.is_file())
        summary = PRESETS[name].summary if name in PRESETS else ""
        others = ", ".join(f"{o} {n}" for o, n in outcomes.items() if not str(o).startswith("ECONNRESET"))
        seen = f"{reset} of {len(clients)}" + (f" ({others})" if others else "")
        out.append(
            f"| [`{name}`]({name}/) | {summary} | {doc['summary']['packets']:,} | {verdicts} | {seen} "
            f"| {size / 1000:.0f} kB |"
        )
    return out


def main() -> None:
    table = "\n".join(rows())
    if "--write" not in sys.argv[1:]:
        print(table)
        return
    readme = HERE / "README.md"
    text = readme.read_text()
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    readme.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}")
    print(f"updated {readme}")


if __name__ == "__main__":
    main()
