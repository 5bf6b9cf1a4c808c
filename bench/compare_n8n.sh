#!/usr/bin/env bash
# ihub beside n8n on this machine: the same load (body, connections, duration) against n8n's webhook and
# ihub's JWT webhook, one after the other; prints accepted/s, p50/p99, completed/s, webhook-to-finished
# p50/p99 for both and the ratios ihub/n8n (bench/compare_n8n.py does the measuring).
#
#   bench/compare_n8n.sh [--seconds 15] [--warmup 2] [--connections 16] [--drain 120] [--json]
#
# Optional: not part of the test command. Needs node and npm (n8n 1.123 runs on Node 20 with the anchor's
# overrides); without them it says so and exits 0. The first run installs n8n from the npm registry into
# ${XDG_CACHE_HOME:-~/.cache}/ihub-bench/n8n (several minutes: sqlite3 compiles); later runs reuse it.
# Every run starts n8n on a fresh data folder (so its execution table holds only this run's work), on
# 127.0.0.1 only, and stops it at the end whatever happens.
set -euo pipefail

# First, before anything else can fail: without Node this optional bench is skipped, not an error.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "compare_n8n: node and npm are needed to run n8n; not found, so nothing was measured (optional bench)."
    exit 0
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
anchor="${IHUB_N8N_ANCHOR:-$root/../shared/anchors/n8n}"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/ihub-bench/n8n"
python="${PYTHON:-$root/.venv/bin/python}"

for file in package.json webhook-set.json; do
    if [[ ! -f "$anchor/$file" ]]; then
        echo "compare_n8n: $anchor/$file not found (set IHUB_N8N_ANCHOR to the n8n anchor folder)" >&2
        exit 2
    fi
done

n8n="$cache/node_modules/.bin/n8n"
# Reinstall when the anchor's package.json changed (another n8n version), else reuse the cache.
if [[ ! -x "$n8n" ]] || ! cmp -s "$anchor/package.json" "$cache/package.json"; then
    echo "compare_n8n: installing n8n into $cache (first time: several minutes)…"
    mkdir -p "$cache"
    cp "$anchor/package.json" "$cache/package.json"
    (cd "$cache" && npm install --no-audit --no-fund --loglevel=error)
fi

data="$(mktemp -d "${TMPDIR:-/tmp}/ihub-bench-n8n-XXXXXX")"
n8n_pid=""
measure_pid=""
cleanup() {
    # The measuring process stops its own ihub on TERM (it turns TERM into an exit that runs its finally).
    if [[ -n "$measure_pid" ]] && kill -0 "$measure_pid" 2>/dev/null; then
        kill -TERM "$measure_pid" 2>/dev/null || true
        wait "$measure_pid" 2>/dev/null || true
    fi
    if [[ -n "$n8n_pid" ]] && kill -0 "$n8n_pid" 2>/dev/null; then
        kill -TERM "$n8n_pid" 2>/dev/null || true
        # n8n shuts down gracefully within its own timeout; do not leave it behind if it does not.
        for _ in $(seq 1 50); do
            kill -0 "$n8n_pid" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL "$n8n_pid" 2>/dev/null || true
    fi
    rm -rf "$data"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port="$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
export N8N_USER_FOLDER="$data"
export N8N_LISTEN_ADDRESS=127.0.0.1
export N8N_PORT="$port"
export DB_TYPE=sqlite
export DB_SQLITE_POOL_SIZE=2
# Keep every byte on 127.0.0.1: no telemetry, version checks, templates or community package lookups.
export N8N_DIAGNOSTICS_ENABLED=false
export N8N_VERSION_NOTIFICATIONS_ENABLED=false
export N8N_TEMPLATES_ENABLED=false
export N8N_COMMUNITY_PACKAGES_ENABLED=false
export N8N_PERSONALIZATION_ENABLED=false
export EXTERNAL_FRONTEND_HOOKS_URLS=""
# Every execution saved (as the anchor workflow asks) and none pruned while we count them.
export EXECUTIONS_MODE=regular
export EXECUTIONS_DATA_SAVE_ON_SUCCESS=all
export EXECUTIONS_DATA_PRUNE=false
export N8N_ENFORCE_SETTINGS_FILE_PERMISSIONS=false
export N8N_RUNNERS_ENABLED=false

# Import and activate while n8n is stopped (the anchor's README: activation is read at start).
"$n8n" import:workflow --input="$anchor/webhook-set.json" >"$data/import.log" 2>&1 \
    || { cat "$data/import.log" >&2; exit 1; }
"$n8n" update:workflow --id=bench1 --active=true >>"$data/import.log" 2>&1 \
    || { cat "$data/import.log" >&2; exit 1; }

"$n8n" start >"$data/n8n.log" 2>&1 &
n8n_pid=$!

# Ready when the webhook answers (the HTTP server is up before workflows are activated).
url="http://127.0.0.1:$port"
ready=""
for _ in $(seq 1 300); do
    if ! kill -0 "$n8n_pid" 2>/dev/null; then
        echo "compare_n8n: n8n exited during start-up:" >&2
        tail -n 40 "$data/n8n.log" >&2
        exit 1
    fi
    if curl -fsS -o /dev/null -X POST -H 'Content-Type: application/json' -d '{}' "$url/webhook/bench" 2>/dev/null; then
        ready=1
        break
    fi
    sleep 0.5
done
if [[ -z "$ready" ]]; then
    echo "compare_n8n: n8n did not answer on $url/webhook/bench within 150 s" >&2
    tail -n 40 "$data/n8n.log" >&2
    exit 1
fi

# In the background and waited for, so that an INT or TERM to this script runs the cleanup at once.
"$python" "$here/compare_n8n.py" --n8n-url "$url" --n8n-db "$data/.n8n/database.sqlite" "$@" &
measure_pid=$!
wait "$measure_pid"
