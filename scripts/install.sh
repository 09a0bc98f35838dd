#!/usr/bin/env bash
# Installs proxify: scripts/install.sh [--prefix DIR] [--destdir DIR] [--sysconfdir DIR]
#                                      [--proxychains-alias] [--no-build] [--uninstall]
#
#   PREFIX/bin/proxify                          the command
#   PREFIX/lib/proxify/libproxify.so            the shim (found from the command's real path)
#   PREFIX/share/man/man1/proxify.1             the manual page
#   PREFIX/share/bash-completion/completions/proxify
#   PREFIX/share/zsh/site-functions/_proxify
#   PREFIX/share/fish/vendor_completions.d/proxify.fish
#   SYSCONFDIR/proxify/config.toml              an example, all commented out; never overwritten
#   PREFIX/bin/proxychains4, proxychains        with --proxychains-alias: links to proxify
#   PREFIX/lib/proxify/install-manifest         what was installed, for --uninstall
#
# PREFIX defaults to /usr/local; SYSCONFDIR to /etc for PREFIX /usr, else PREFIX/etc. DESTDIR
# stages everything below another root (for packaging). --uninstall removes exactly what the
# manifest lists (the example config only if it is unchanged).
set -euo pipefail
cd "$(dirname "$0")/.."

prefix=/usr/local destdir="" sysconfdir="" alias=0 build=1 uninstall=0
usage() { sed -n '2,3p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix=${2:?--prefix needs a directory}; shift 2 ;;
        --prefix=*) prefix=${1#*=}; shift ;;
        --destdir) destdir=${2:?--destdir needs a directory}; shift 2 ;;
        --destdir=*) destdir=${1#*=}; shift ;;
        --sysconfdir) sysconfdir=${2:?--sysconfdir needs a directory}; shift 2 ;;
        --sysconfdir=*) sysconfdir=${1#*=}; shift ;;
        --proxychains-alias) alias=1; shift ;;
        --no-build) build=0; shift ;;
        --uninstall) uninstall=1; shift ;;
        -h|--help) usage ;;
        *) echo "install: unknown option $1" >&2; usage ;;
    esac
done
case "$prefix" in /*) ;; *) echo "install: --prefix must be absolute" >&2; exit 2 ;; esac
if [ -z "$sysconfdir" ]; then
    if [ "$prefix" = /usr ]; then sysconfdir=/etc; else sysconfdir=$prefix/etc; fi
fi
root=${destdir%/}
manifest=$prefix/lib/proxify/install-manifest

if [ "$uninstall" = 1 ]; then
    if [ ! -f "$root$manifest" ]; then
        echo "install: nothing to uninstall: $root$manifest does not exist" >&2; exit 1
    fi
    mapfile -t lines < "$root$manifest"
    rm -f "$root$manifest"
    for line in "${lines[@]}"; do
        sum=${line%% *} path=${line#* }
        f=$root$path
        case "$sum" in
            dir) rmdir "$f" 2>/dev/null || true ;;  # only when empty: deepest first
            link) if [ -L "$f" ]; then rm -f "$f"; fi ;;
            *) if [ -f "$f" ]; then
                   if [ "$(sha256sum < "$f" | cut -d' ' -f1)" != "$sum" ]; then
                       echo "install: keeping $f: it was changed since it was installed"
                   else
                       rm -f "$f"
                   fi
               fi ;;
        esac
    done
    echo "install: removed proxify from $root$prefix"
    exit 0
fi

if [ "$build" = 1 ]; then cargo build --release --quiet -p proxify-cli -p proxify-shim; fi
target=${CARGO_TARGET_DIR:-target}/release
for f in "$target/proxify" "$target/libproxify.so"; do
    [ -f "$f" ] || { echo "install: $f is missing: build with 'cargo build --release'" >&2; exit 1; }
done

entries=() dirs=()
note_dirs() { # note_dirs PATH: record the directories above PATH that install will create
    local d
    d=$(dirname "$1")
    while [ "$d" != / ] && [ ! -d "$root$d" ]; do dirs=("$d" "${dirs[@]}"); d=$(dirname "$d"); done
}
put() { # put MODE SOURCE DEST: copy and record its checksum
    note_dirs "$3"
    install -D -m "$1" "$2" "$root$3"
    entries+=("$(sha256sum < "$2" | cut -d' ' -f1) $3")
}
gen=$(mktemp -d); trap 'rm -rf "$gen"' EXIT
"$target/proxify" man > "$gen/proxify.1"
for sh in bash zsh fish; do "$target/proxify" completions "$sh" > "$gen/$sh"; done

put 755 "$target/proxify" "$prefix/bin/proxify"
put 644 "$target/libproxify.so" "$prefix/lib/proxify/libproxify.so"
put 644 "$gen/proxify.1" "$prefix/share/man/man1/proxify.1"
put 644 "$gen/bash" "$prefix/share/bash-completion/completions/proxify"
put 644 "$gen/zsh" "$prefix/share/zsh/site-functions/_proxify"
put 644 "$gen/fish" "$prefix/share/fish/vendor_completions.d/proxify.fish"
conf=$sysconfdir/proxify/config.toml
if [ -e "$root$conf" ]; then
    echo "install: keeping the existing $root$conf"
else
    put 644 packaging/config.toml "$conf"
fi
if [ "$alias" = 1 ]; then
    for name in proxychains4 proxychains; do
        link=$prefix/bin/$name
        if [ -e "$root$link" ] && [ ! -L "$root$link" ]; then
            echo "install: keeping the existing $root$link (not a link): no $name alias" >&2
            continue
        fi
        ln -sfn proxify "$root$link"
        entries+=("link $link")
    done
fi
note_dirs "$manifest"
mkdir -p "$(dirname "$root$manifest")"
# Files first, then the directories install created, deepest first.
{ printf '%s\n' "${entries[@]}"
  for ((i = ${#dirs[@]} - 1; i >= 0; i--)); do printf 'dir %s\n' "${dirs[$i]}"; done; } > "$root$manifest"
echo "install: proxify installed in $root$prefix (uninstall: scripts/install.sh --prefix $prefix${destdir:+ --destdir $destdir} --uninstall)"
