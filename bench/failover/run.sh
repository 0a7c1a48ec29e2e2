#!/usr/bin/env bash
# The failover scorecard, from a fresh clone to the table and chart:  bash bench/failover/run.sh [run.py options]
#
# 1. the project's venv and bench/.venv-peers, as bench/run.sh builds them (its --setup-only);
# 2. Portkey's open-source gateway from npm into bench/failover/node_modules (pinned in package.json);
# 3. bench/failover/run.py: every scenario against every contender, in parallel; prints the scorecard and writes
#    bench/failover/results/latest.{md,json,png}. About 3 minutes once the venvs exist (4-8 minutes to build them).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"

bash "$ROOT/bench/run.sh" --setup-only
if command -v npm >/dev/null && [ ! -f "$HERE/node_modules/@portkey-ai/gateway/package.json" ]; then
    printf 'failover: npm install (Portkey gateway)\n' >&2
    npm install --prefix "$HERE" --no-audit --no-fund --loglevel=error >&2 \
        || printf 'failover: npm install failed; Portkey will be listed as not run\n' >&2
fi
exec "$ROOT/bench/.venv-peers/bin/python" "$HERE/run.py" "$@"
