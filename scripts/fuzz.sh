#!/usr/bin/env bash
# Fuzz proxify-core with cargo-fuzz (libFuzzer + AddressSanitizer) for a bounded time.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]     (default 60; CI runs a short pass: 10)
#
# Targets (fuzz/fuzz_targets/): socks_client (the sans-IO SOCKS4/4a/5 client against a proxy
# that answers anything), udp_header (SOCKS5 UDP header parse/encode round trip), proxy_url
# (proxy URL parsing, printing and password masking), dns_responder (the in-process DNS
# responder: query parsing, replies, TCP framing), progcheck (the program check's ELF
# reader, #! and env -S parsing, the dynamic loader's arguments).
#
# Works on the stable toolchain: cargo-fuzz needs nightly-only rustc flags (-Zsanitizer,
# sancov passes), which RUSTC_BOOTSTRAP=1 unlocks on stable. Installs cargo-fuzz with
# `cargo install --locked` when it is missing. Exits 1 if any target crashes (panic, failed
# invariant, sanitizer report, hang, out of memory) and prints the crashing input and the
# command that reproduces it. New interesting inputs are kept in fuzz/corpus/ (not committed);
# fuzz/seeds/ holds the committed starting inputs.
set -euo pipefail

SECS="${1:-60}"
if ! [[ "$SECS" =~ ^[0-9]+$ ]] || [ "$SECS" -lt 1 ]; then
    echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET]  (a whole number >= 1; default 60)" >&2
    exit 2
fi

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
FUZZ="$ROOT/fuzz"
TARGETS=(socks_client udp_header proxy_url dns_responder progcheck)
CARGO_FUZZ_VERSION=0.13.2

export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
export RUSTC_BOOTSTRAP=1
# libfuzzer-sys builds libFuzzer from its C++ source.
if ! command -v c++ >/dev/null 2>&1; then
    echo "fuzz: FAILED: no C++ compiler (c++) to build libFuzzer; install it: apt-get install -y g++" >&2
    exit 1
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "fuzz: FAILED: cargo not found; install the Rust toolchain (rustup)" >&2
    exit 1
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION (cargo install --locked)"
    if ! cargo install --locked --version "$CARGO_FUZZ_VERSION" cargo-fuzz >"${TMPDIR:-/tmp}/proxify-cargo-fuzz-install.log" 2>&1; then
        tail -n 20 "${TMPDIR:-/tmp}/proxify-cargo-fuzz-install.log" >&2
        echo "fuzz: FAILED: could not install cargo-fuzz; try: cargo install --locked cargo-fuzz" >&2
        exit 1
    fi
fi

cd "$ROOT"
echo "fuzz: building ${TARGETS[*]} ($(cargo fuzz --version), $(rustc --version))"
BUILD_LOG="$FUZZ/target/build.log"
mkdir -p "$FUZZ/target"
if ! cargo fuzz build --fuzz-dir "$FUZZ" >"$BUILD_LOG" 2>&1; then
    grep -v '^ *[0-9]*: \|^ *at ' "$BUILD_LOG" | tail -n 30 >&2
    echo "fuzz: FAILED: the fuzz targets do not build (log: $BUILD_LOG)" >&2
    exit 1
fi

failed=()
for t in "${TARGETS[@]}"; do
    corpus="$FUZZ/corpus/$t"
    seeds="$FUZZ/seeds/$t"
    art="$FUZZ/artifacts/$t"
    log="$FUZZ/artifacts/$t.log"
    mkdir -p "$corpus" "$art"
    # -max_total_time bounds the run; -timeout fails any single input that takes over 10 s
    # (a hang); timeout(1) is the backstop that ends the whole process group (cargo-fuzz and
    # the fuzzer it started) if libFuzzer itself does not stop.
    rc=0
    timeout --kill-after=15 $((SECS + 120)) \
        cargo fuzz run --fuzz-dir "$FUZZ" "$t" "$corpus" "$seeds" -- \
        -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1 || rc=$?
    runs="$(grep -o 'Done [0-9]* runs in [0-9]* second' "$log" | tail -n 1 | sed 's/ second$/ s/' || true)"
    if [ "$rc" -eq 0 ]; then
        echo "fuzz: $t: ok (${runs:-no run count}; corpus $(find "$corpus" -type f | wc -l) inputs)"
        continue
    fi
    failed+=("$t")
    echo "fuzz: $t: FAILED (exit $rc)" >&2
    # The panic or sanitizer report, without the stack backtrace.
    { grep -m 1 -A 4 -E "panicked at|ERROR: AddressSanitizer|ERROR: libFuzzer" "$log" || tail -n 20 "$log"; } |
        grep -v -E "stack backtrace:|^ +[0-9]+: |^ +at |^ +#[0-9]+ " >&2 || true
    inputs="$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log")"
    if [ -n "$inputs" ]; then
        while IFS= read -r input; do
            echo "fuzz: $t: crashing input: $input" >&2
            echo "fuzz: $t: reproduce: cd $ROOT && RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz $t $input" >&2
        done <<<"$inputs"
    elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        echo "fuzz: $t: did not stop within $((SECS + 120)) s" >&2
    fi
    echo "fuzz: $t: full log: $log" >&2
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz: ${#TARGETS[@]} targets, ${SECS} s each: no crash"
