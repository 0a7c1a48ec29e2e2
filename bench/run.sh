#!/usr/bin/env bash
# The benchmark, from nothing to the table:  bash bench/run.sh [--quick] [run.py options]
#
# 1. the project's venv (.venv) via scripts/setup.sh, plus the gateway's extra (polychat[server]);
# 2. bench/.venv-peers: the peers and tools (openai, litellm[proxy], g4f[api], langchain-openai, aiohttp, matplotlib,
#    pyinstrument, py-spy), never installed into polychat's own environment;
# 3. bench/run.py: prints the table and writes bench/results/latest.{md,json,png}.
#
# --setup-only: stop after step 2 (bench/failover/run.sh uses this).
# Environment: BENCH_PYTHON (interpreter for the peers' venv, default python3), BENCH_PEERS_FORCE=1 (reinstall).
set -euo pipefail
export PIP_DISABLE_PIP_VERSION_CHECK=1

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH/.." && pwd)"
PEERS="$BENCH/.venv-peers"
PYTHON="${BENCH_PYTHON:-python3}"
# Pinned so that a rerun measures the same peers; bump deliberately.
PEER_PACKAGES=(
    "openai==3.57.0" "litellm[proxy]==1.108.7" "g4f[api]==8.8.6" "aiohttp==3.14.5" "uvloop"
    "matplotlib" "pyinstrument" "py-spy" "msgspec" "langchain-openai==1.7.4" "langchain-core==1.8.1"
)

log() { printf 'bench: %s\n' "$*" >&2; }

log "project venv (scripts/setup.sh)"
bash "$ROOT/scripts/setup.sh"
if ! "$ROOT/.venv/bin/python" -c "import starlette, uvicorn, httptools, uvloop" 2>/dev/null; then
    log "installing polychat[server] into .venv (the gateway)"
    # --only-binary: never build llama-cpp-python again here; the installed portable build satisfies the pin.
    "$ROOT/.venv/bin/python" -m pip install -q --only-binary llama-cpp-python -e "$ROOT[server]"
fi

stamp="$PEERS/.bench-stamp"
want="$(printf '%s\n' "${PEER_PACKAGES[@]}" | sha256sum | cut -d' ' -f1)"
if [ "${BENCH_PEERS_FORCE:-0}" = 1 ] || [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    log "peers venv $PEERS"
    [ -x "$PEERS/bin/python" ] || "$PYTHON" -m venv "$PEERS"
    "$PEERS/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
    if ! "$PEERS/bin/python" -m pip install -q "${PEER_PACKAGES[@]}" 2>"$PEERS/install.log"; then
        tail -n 20 "$PEERS/install.log" >&2
        log "some peers did not install; trying them one by one (the table will say which are missing)"
        for pkg in "${PEER_PACKAGES[@]}"; do
            "$PEERS/bin/python" -m pip install -q "$pkg" 2>>"$PEERS/install.log" || log "could not install $pkg"
        done
    fi
    printf '%s\n' "$want" >"$stamp"
fi

if [ "${1:-}" = "--setup-only" ]; then
    exit 0
fi
load="$(cut -d' ' -f1 /proc/loadavg)"
log "load average now: $load (for stable numbers run on an idle machine)"
exec "$PEERS/bin/python" "$BENCH/run.py" "$@"
