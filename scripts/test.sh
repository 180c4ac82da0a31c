#!/usr/bin/env bash
# Sets everything up and runs the whole test suite (the lab tests need root: run as root).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh chromium
export RSTSCOPE_REQUIRE_ROOT_TESTS="${RSTSCOPE_REQUIRE_ROOT_TESTS:-$([ "$(id -u)" = 0 ] && echo 1 || echo 0)}"
.venv/bin/ruff check rstscope tests benchmarks
exec .venv/bin/python -m pytest -q -rs --durations=5 "$@"
