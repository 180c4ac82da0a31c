#!/usr/bin/env bash
# Sets up everything rstscope needs on a fresh Debian machine, as root:
# Debian tools (tshark, tcpdump, iproute2, ethtool, nftables; tcptrace and GNU time for the benchmark; gcc and python3-dev
# to compile the tracker's event loop at install), a virtualenv in .venv, the package.
# Idempotent: a second run only checks.  Extra apt packages can be named as arguments.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=(tshark tcpdump iproute2 ethtool nftables tcptrace time gcc python3-dev "$@")
missing=()
for pkg in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "setup: need root to install ${missing[*]} (or install them yourself)" >&2
        exit 1
    fi
    echo "setup: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
# Reinstall when the dependencies or any compiled loop (rstscope/**/*.c, its cffi build script) changed.
if ! .venv/bin/python -c "import rstscope.connections, rstscope.reader, pytest" 2>/dev/null \
        || [ ! -e .venv/.installed ] || [ pyproject.toml -nt .venv/.installed ] || [ setup.py -nt .venv/.installed ] \
        || [ -n "$(find rstscope -name '*.c' -newer .venv/.installed -o -name '_*_build.py' -newer .venv/.installed)" ]; then
    echo "setup: installing rstscope and its Python dependencies into .venv" >&2
    .venv/bin/pip install -q --disable-pip-version-check -e ".[dev,fleet]"
    touch .venv/.installed
fi
