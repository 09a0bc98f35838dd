#!/usr/bin/env bash
# Builds the Debian package: target/debian/proxify_VERSION_ARCH.deb (same layout as
# scripts/install.sh --prefix /usr; /etc/proxify/config.toml is a conffile). Needs cargo-deb
# (installed from crates.io when missing). Prints the path of the .deb on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO_DEB_VERSION=3.8.0
if ! cargo deb --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION"; then
    echo "deb: installing cargo-deb $CARGO_DEB_VERSION (cargo install --locked)" >&2
    cargo install --quiet --locked --version "$CARGO_DEB_VERSION" cargo-deb >&2
fi
[ "${1:-}" = --no-build ] || cargo build --release --quiet -p proxify-cli -p proxify-shim
target=${CARGO_TARGET_DIR:-target}/release
out=$target/packaging
mkdir -p "$out"
"$target/proxify" man | gzip -9n > "$out/proxify.1.gz"
"$target/proxify" completions bash > "$out/proxify.bash"
"$target/proxify" completions zsh > "$out/_proxify"
"$target/proxify" completions fish > "$out/proxify.fish"
cargo deb -p proxify-cli --no-build --no-strip --quiet 2>&1 | tail -n 1
