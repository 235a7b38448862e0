#!/usr/bin/env bash
# Installs the binaries, the systemd units and the example configs; `make install` builds the
# release binaries first and runs this.
#
#   PREFIX    where bin/ and share/ go (default /usr/local); the units' ExecStart follows it
#   DESTDIR   a staging root prepended to every path (default: none)
#   UNITDIR   where the units go (default /etc/systemd/system)
#   BINARIES  the directory holding the built binaries (default target/release)
#
# Configs go where the units read them (/etc/meshd, /etc/rma-mesh, /etc/cloudflared), and only
# when no file is there yet: an existing config is never overwritten. Every example, alerts.yml
# included, is also kept under PREFIX/share/rma-mesh/examples (replaced on each install).
set -euo pipefail
cd "$(dirname "$0")/.."

prefix=${PREFIX:-/usr/local}
destdir=${DESTDIR:-}
unitdir=${UNITDIR:-/etc/systemd/system}
binaries=${BINARIES:-target/release}
programs=(rma-ca meshd lighthouse routerd)

for program in "${programs[@]}"; do
    if [[ ! -x $binaries/$program ]]; then
        echo "install: $binaries/$program is missing: build it first (make build)" >&2
        exit 1
    fi
done

install -d "$destdir$prefix/bin"
for program in "${programs[@]}"; do
    install -m 0755 "$binaries/$program" "$destdir$prefix/bin/$program"
done

install -d "$destdir$unitdir"
for unit in configs/systemd/*.service; do
    sed "s|/usr/bin/|$prefix/bin/|g" "$unit" >"$destdir$unitdir/$(basename "$unit")"
    chmod 0644 "$destdir$unitdir/$(basename "$unit")"
done

examples=$prefix/share/rma-mesh/examples
install -d "$destdir$examples"
cp -R configs/. "$destdir$examples/"

# config in configs/ -> where its unit (or cloudflared) reads it
place() {
    local target=$destdir$2
    if [[ -e $target ]]; then
        echo "install: kept $2 (the new example is $examples/$1)"
    else
        install -D -m 0644 "configs/$1" "$target"
        echo "install: $2"
    fi
}
place meshd.toml /etc/meshd/meshd.toml
place lighthouse.toml /etc/rma-mesh/lighthouse.toml
place routerd.toml /etc/rma-mesh/routerd.toml
place cloudflared/config.yml /etc/cloudflared/config.yml

echo "install: ${programs[*]} in $prefix/bin, units in $unitdir, examples in $examples"
