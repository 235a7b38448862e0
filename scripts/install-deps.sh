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

