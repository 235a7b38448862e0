#!/usr/bin/env bash
# Installs what the build and tests need and a fresh machine (only the Rust toolchain) lacks.
# Debian packages through apt-get when running as root; otherwise it names what is missing.
set -euo pipefail

# program -> Debian package that provides it. Looked up as files on PATH (`type -P`), so that a
# shell builtin such as `kill` does not hide a missing program the tests run directly.
declare -A packages=(
    [openssl]=openssl
    [make]=make
    [ip]=iproute2
    [nft]=nftables
    [ping]=iputils-ping
    [kill]=procps
    [sysctl]=procps
    [systemd-analyze]=systemd
    [chromium]=chromium
    [curl]=curl
    [promtool]=prometheus
    [lintian]=lintian
    [dpkg-deb]=dpkg
    [mmdebstrap]=mmdebstrap
    [podman]=podman
    [runc]=runc
    [socat]=socat
    [dig]=dnsutils
    [dbus-daemon]=dbus-daemon
    [busctl]=systemd
    [tinyproxy]=tinyproxy-bin
)

missing=()
for command in "${!packages[@]}"; do
    type -P "$command" >/dev/null 2>&1 || missing+=("${packages[$command]}")
done

if ((${#missing[@]})); then
    # One package can provide several missing programs.
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    if [[ $(id -u) -ne 0 ]]; then
        echo "install-deps: missing ${missing[*]}; run as root or install them with apt-get" >&2
        exit 1
    fi
    echo "install-deps: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

for component in rustfmt clippy; do
    if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
        rustup component add "$component"
    fi
done


# Debian packages that tests run but that must not be installed here (their maintainer
# scripts would take over this machine's resolver, or start a daemon on it): downloaded and
# unpacked into DIR. unpack DIR PACKAGE...
unpack() {
    local dir=$1 download deb
    shift
    if [[ $(id -u) -ne 0 ]]; then
        echo "install-deps: run as root to unpack $* into $dir" >&2
        exit 1
    fi
    echo "install-deps: unpacking $* into $dir"
    download=$(mktemp -d)
    chmod 755 "$download" # apt's download sandbox user writes here
    if ! (cd "$download" && apt-get download -qq "$@" 2>/dev/null); then
        apt-get update -qq
        (cd "$download" && apt-get download -qq "$@")
    fi
    rm -rf "$dir"
    mkdir -p "$dir"
    for deb in "$download"/*.deb; do dpkg-deb -x "$deb" "$dir"; done
    rm -rf "$download"
}

# systemd-resolved, for the test of meshd's split-DNS registration. The test runs it in a
# private mount namespace with a D-Bus of its own. It comes with the libsystemd-shared of the
# same version, since apt may offer a newer systemd than the one installed.
resolved=/opt/rma-mesh-test/systemd-resolved
if [[ ! -x $resolved/bin/resolvectl ]]; then
    unpack "$resolved/root" systemd-resolved libsystemd-shared
    mkdir -p "$resolved/bin"
    shared=$(echo "$resolved"/root/usr/lib/*/systemd/libsystemd-shared-*.so)
    for program in usr/bin/resolvectl lib/systemd/systemd-resolved; do
        cat >"$resolved/bin/${program##*/}" <<WRAPPER
#!/bin/sh
LD_LIBRARY_PATH=${shared%/*} exec $resolved/root/$program "\$@"
WRAPPER
        chmod 755 "$resolved/bin/${program##*/}"
    done
fi

# miniupnpd (nftables build), the router's port-mapping server (PCP, NAT-PMP, UPnP-IGD) in the
# port-mapping tests.
miniupnpd=/opt/rma-mesh-test/miniupnpd
if [[ ! -x $miniupnpd/usr/sbin/miniupnpd ]]; then
    unpack "$miniupnpd" miniupnpd-nftables
fi
