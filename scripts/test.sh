#!/usr/bin/env bash
# Runs every test: the workspace's cargo tests, a short pass of the cargo-fuzz targets, then
# the integration suite against real SOCKS servers in network namespaces (needs root).
# Exits non-zero if anything failed; the last line counts what ran.
set -uo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh </dev/null || { echo "test: scripts/setup.sh failed" >&2; exit 1; }

status=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT

echo "== cargo test --workspace"
cargo test --workspace </dev/null 2>&1 | tee -a "$log" || status=1

echo "== cargo fmt --check and cargo clippy -D warnings (the shim's clippy.toml: hooked libc functions only through real::)"
{ cargo fmt --all -- --check && cargo clippy --workspace --all-targets -- -D warnings; } </dev/null 2>&1 | tail -30 || status=1

echo "== layers: the shim's imports point down, no cycle (scripts/layers.py)"
{ python3 scripts/layers.py --self-test && python3 scripts/layers.py; } </dev/null || status=1

echo "== fuzz: a short bounded pass of each target (scripts/fuzz.sh ${PROXIFY_FUZZ_SECS:-10})"
bash scripts/fuzz.sh "${PROXIFY_FUZZ_SECS:-10}" </dev/null || status=1

echo "== integration tests (tests/integration)"
python3 -m pytest tests/integration -v --durations=10 </dev/null 2>&1 | tee -a "$log" || status=1

# cargo's "test result: ok. N passed; M failed" lines and pytest's "N passed, M failed in ..."
passed=0 failed=0
while read -r n; do passed=$((passed + n)); done < <(grep -E '^test result:' "$log" | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+')
while read -r n; do failed=$((failed + n)); done < <(grep -E '^test result:' "$log" | grep -oE '[0-9]+ failed' | grep -oE '[0-9]+')
last=$(grep -vE '^test result' "$log" | grep -E '[0-9]+ (passed|failed|error).* in [0-9.]+s' | tail -1)
p=$(grep -oE '[0-9]+ passed' <<<"$last" | grep -oE '[0-9]+' || true)
f=$(grep -oE '[0-9]+ (failed|error)' <<<"$last" | awk '{s += $1} END {print s + 0}')
passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0}))
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi

if [ "$status" -ne 0 ]; then echo "test: FAILED" >&2; fi
echo "$passed passed, $failed failed"
exit "$status"
