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


# systemd-resolved, for the test of meshd's split-DNS registration: unpacked here, never
# installed (installing it takes over the machine's /etc/resolv.conf). The test runs it in a
# private mount namespace with a D-Bus of its own. It comes with the libsystemd-shared of the
# same version, since apt may offer a newer systemd than the one installed.
resolved=/opt/rma-mesh-test/systemd-resolved
if [[ ! -x $resolved/bin/resolvectl ]]; then
    if [[ $(id -u) -ne 0 ]]; then
        echo "install-deps: run as root to unpack systemd-resolved into $resolved" >&2
        exit 1
    fi
    echo "install-deps: unpacking systemd-resolved into $resolved"
    download=$(mktemp -d)
    chmod 755 "$download" # apt's download sandbox user writes here
    if ! (cd "$download" && apt-get download -qq systemd-resolved libsystemd-shared 2>/dev/null); then
        apt-get update -qq
        (cd "$download" && apt-get download -qq systemd-resolved libsystemd-shared)
    fi
    rm -rf "$resolved"
    mkdir -p "$resolved/bin"
    for deb in "$download"/*.deb; do dpkg-deb -x "$deb" "$resolved/root"; done
    rm -rf "$download"
    shared=$(echo "$resolved"/root/usr/lib/*/systemd/libsystemd-shared-*.so)
    for program in usr/bin/resolvectl lib/systemd/systemd-resolved; do
        cat >"$resolved/bin/${program##*/}" <<WRAPPER
#!/bin/sh
LD_LIBRARY_PATH=${shared%/*} exec $resolved/root/$program "\$@"
WRAPPER
        chmod 755 "$resolved/bin/${program##*/}"
    done
fi
