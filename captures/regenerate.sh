#!/bin/sh
# Regenerates the labelled sample captures under captures/<preset>/ with `rstscope lab`.
#
# Needs root (network namespaces, tbf, tracefs).  Run from anywhere:
#     sudo captures/regenerate.sh              # every preset
#     sudo captures/regenerate.sh close-race   # only the ones named
#     captures/regenerate.sh --analysis-only   # no root: rewrite each analysis.json with the current analyzer
#
# Each run is kept small (a few clients, 128-byte snaplen: headers and the first
# bytes of payload only; payload lengths still come from the IP headers) so that
# every sample stays well under 2 MB.  The run directory is made under
# captures/runs/ (git-ignored) and its files are copied to captures/<preset>/;
# analysis.json is then rewritten with the sample's own relative path.
# Afterwards, check the table in captures/README.md against `rstscope analyze`.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
cd "$root"
rstscope=${RSTSCOPE:-$root/.venv/bin/rstscope}
python=${PYTHON:-$root/.venv/bin/python}
max_bytes=2000000

# preset -> extra `rstscope lab` options (kept small; the preset sets the rest)
options_for() {
    case "$1" in
        close-race|lingering|linger0|clean) echo "--loops 4 --count 2 --snaplen 128" ;;
        late-data) echo "--loops 4 --count 2 --snaplen 128" ;;
        backlog) echo "--snaplen 128" ;;           # 20 loops: enough half-open handshakes to overflow
        backlog-silent) echo "--snaplen 128" ;;
        refused) echo "--loops 4 --count 2 --snaplen 128" ;;
        # the middlebox presets (client -- router -- server) and the close paths of issue 8
        firewall-reject|firewall-syn|conntrack-idle|inject|ignored|keepalive|late-fin) echo "--loops 2 --snaplen 128" ;;
        shutdown-close) echo "--loops 2 --snaplen 128" ;;
        *) echo "unknown preset: $1" >&2; exit 2 ;;
    esac
}

all="close-race lingering linger0 late-data backlog backlog-silent refused clean
firewall-reject firewall-syn conntrack-idle inject ignored keepalive shutdown-close late-fin"
if [ "${1:-}" = "--analysis-only" ]; then
    for preset in $all; do
        "$rstscope" analyze "captures/$preset" --json -o "captures/$preset/analysis.json"
    done
    "$python" captures/table.py --write
    exit 0
fi
presets=${*:-$all}
for preset in $presets; do
    echo "== $preset"
    # shellcheck disable=SC2046
    run=$("$rstscope" lab --scenario "$preset" $(options_for "$preset") --run-root captures/runs --json \
        | "$python" -c 'import json, sys; print(json.load(sys.stdin)["run"])')
    dest=captures/$preset
    rm -rf "$dest"
    mkdir -p "$dest"
    for name in capture.pcapng run.json clients.jsonl server.jsonl kernel.jsonl nstat.json injector.jsonl; do
        if [ -f "$run/$name" ]; then cp "$run/$name" "$dest/$name"; fi
    done
    chmod 644 "$dest"/*
    # analysis.json: re-analysed in place, so that its capture path is the sample's own.
    "$rstscope" analyze "$dest" --json -o "$dest/analysis.json"
    for file in "$dest"/*; do
        size=$(wc -c <"$file")
        if [ "$size" -ge "$max_bytes" ]; then
            echo "error: $file is $size bytes (limit $max_bytes): lower --loops/--count" >&2
            exit 1
        fi
    done
    du -sh "$dest"
done
"$python" captures/table.py --write
