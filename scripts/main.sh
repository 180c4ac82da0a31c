#!/usr/bin/env bash
# Sets everything up, reproduces the close race and its fix (lingering close) in the lab,
# and writes the report a person can hand on.  Needs root (network namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
mkdir -p out
echo "== rstscope lab --compare close-race lingering" >&2
.venv/bin/rstscope lab --compare close-race lingering --json > out/compare.json
mapfile -t runs < <(.venv/bin/python -c 'import json; [print(r["run"]) for r in json.load(open("out/compare.json"))]')
for run in "${runs[@]}"; do
    echo "== rstscope analyze $run" >&2
    .venv/bin/rstscope analyze "$run" --summary-only
done
.venv/bin/rstscope report "${runs[@]}" -o out/report.html
echo
echo "Report: $(pwd)/out/report.html (Markdown twin: out/report.md); runs: ${runs[*]}"
