#!/usr/bin/env bash
# The main job.
#   scripts/run.sh                    demo: sets up, builds a throw-away network (client, proxy,
#                                     target namespaces), starts Dante on the proxy host and runs
#                                     proxify run -x socks5h://198.51.100.1:1080 -- curl -sS http://target.example/
#                                     on the client host, prints the page, tears everything down.
#   scripts/run.sh -x URL -- CMD...   proxify run -x URL -- CMD... here, with your own proxy.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/proxify"

if [ "$#" -gt 0 ]; then
    if [ ! -x "$BIN" ]; then cargo build --release --workspace --quiet; fi
    exec "$BIN" run "$@"
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "run: the demo needs root (it creates network namespaces)" >&2
    exit 1
fi
scripts/setup.sh

NETNS="$ROOT/tests/integration/netns.py"
python3 "$NETNS" demo -- "$BIN" run -x socks5h://198.51.100.1:1080 -- curl -sS --max-time 15 http://target.example/ &
pid=$!
cleanup() {
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    python3 "$NETNS" down
}
trap 'cleanup; exit 130' INT TERM
rc=0
wait "$pid" || rc=$?
trap - INT TERM
python3 "$NETNS" down   # no-op unless the demo died without tearing down
exit "$rc"
