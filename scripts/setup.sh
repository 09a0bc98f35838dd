#!/usr/bin/env bash
# Installs what proxify's build and test suite need and builds the release binaries.
# Idempotent: a second run installs nothing and only lets cargo check that the build is current.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
SUDO=()
if [ "$(id -u)" -ne 0 ]; then SUDO=(sudo); fi

# Debian packages: the real servers and clients the integration tests run.
PKGS=(dante-server microsocks proxychains4 tcpdump iproute2 curl openssh-server openssh-client
      socat netcat-openbsd dnsmasq-base vsftpd wget python3 bind9-dnsutils
      git nodejs gcc libc6-dev tinyproxy)
PKGS+=(ruby nmap python3-aiohttp python3-aiodns)  # issue 12: programs with their own DNS client
PKGS+=(hostname)  # issue 17 item 11: hostname -i in test_own_hostname
PKGS+=(lftp tnftp)  # issue 17 item 3: active FTP clients under the default --bind auto
PKGS+=(chromium)  # issue 12: a browser with its own resolver, headless, in test_dns_responder
PKGS+=(golang-go)  # issue 13: a CGO_ENABLED=0 Go client under the supervisor
PKGS+=(libevent-dev libglib2.0-dev pkg-config default-jdk-headless)  # issue 11: event-loop clients (libevent, GIO, Java NIO)

PKGS+=(libcap2-bin util-linux binutils)  # issues 14/17: setcap, setpriv, su and readelf for the exec checks' tests
PKGS+=(strace)  # issue 15: scripts/bench counts the system calls of a proxied connect
missing=()
for p in "${PKGS[@]}"; do
    if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
        missing+=("$p")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    # Keep the packages' services (sshd, danted, vsftpd) from starting on the host.
    added_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee /usr/sbin/policy-rc.d >/dev/null
        "${SUDO[@]}" chmod 755 /usr/sbin/policy-rc.d
        added_policy=1
    fi
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    if [ "$added_policy" = 1 ]; then "${SUDO[@]}" rm -f /usr/sbin/policy-rc.d; fi
fi

# pytest for the python3 that scripts/test.sh runs: pip where python3 allows it (pyenv, venv),
# else Debian's package for the system python3.
if ! python3 -c 'import pytest' 2>/dev/null; then
    echo "setup: installing pytest for $(command -v python3)"
    if ! python3 -m pip install -q pytest 2>/dev/null; then
        "${SUDO[@]}" apt-get install -y -qq python3-pytest >/dev/null 2>&1 || {
            "${SUDO[@]}" apt-get update -qq
            "${SUDO[@]}" apt-get install -y -qq python3-pytest >/dev/null
        }
    fi
    python3 -c 'import pytest' || { echo "setup: could not install pytest for $(command -v python3)" >&2; exit 1; }
fi

# issue 11: event-loop clients from PyPI (trio, anyio) and uv (a tokio program) for the tests.
for m in trio anyio uv; do
    if ! python3 -c "import $m" 2>/dev/null; then
        echo "setup: installing $m for $(command -v python3)"
        python3 -m pip install -q "$m" || { echo "setup: could not install $m" >&2; exit 1; }
    fi
done

# issue 11: the tokio/reqwest test client (from crates.io), built into target/test-programs.
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}/test-programs" \
    cargo build --release --quiet --manifest-path tests/programs/evloop/Cargo.toml

# cargo-deb for scripts/deb.sh (the .deb test of issue 16), pinned like cargo-fuzz.
CARGO_DEB_VERSION=$(sed -n 's/^CARGO_DEB_VERSION=//p' scripts/deb.sh)
if ! cargo deb --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION"; then
    echo "setup: installing cargo-deb $CARGO_DEB_VERSION (cargo install --locked)"
    cargo install --quiet --locked --version "$CARGO_DEB_VERSION" cargo-deb
fi

# Release binaries: target/release/proxify and target/release/libproxify.so.
cargo build --release --workspace --quiet
