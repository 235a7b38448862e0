#!/bin/sh
# Builds the worker image (make image) without a registry: a Debian root made by mmdebstrap
# from the package mirror, holding this project's .deb, tini and the entrypoint
# packaging/image/rma-worker, imported with podman and saved as an image archive that
# `podman load` and `docker load` both take.
#
#   scripts/build-image.sh PACKAGE.deb OUT.tar [TAG]
#
# SUITE (by default this machine's Debian release, which the package's library versions
# come from) and MIRROR (http://deb.debian.org/debian) choose the Debian root.
set -eu

if [ $# -lt 2 ] || [ $# -gt 3 ]; then
    echo "usage: build-image.sh PACKAGE.deb OUT.tar [TAG] (one package)" >&2
    exit 2
fi
deb=$1
out=$2
tag=${3:-localhost/rma-mesh-worker:latest}
host_suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
suite=${SUITE:-${host_suite:-bookworm}}
mirror=${MIRROR:-http://deb.debian.org/debian}
here=$(cd "$(dirname "$0")/.." && pwd)

[ -f "$deb" ] || { echo "build-image: no package at $deb" >&2; exit 1; }
deb=$(cd "$(dirname "$deb")" && pwd)/$(basename "$deb")

# podman's storage for the import, of its own and without mounts (vfs), removed at the end.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT TERM
podman_here() {
    podman --root "$work/storage" --runroot "$work/run" --storage-driver vfs "$@"
}

# The root: Debian's essential set plus the package and what it depends on. Manual pages,
# translations and documentation are left out, except this project's and every copyright file.
mmdebstrap --variant=essential --quiet \
    --hook-dir=/usr/share/mmdebstrap/hooks/file-mirror-automount \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/rma-mesh/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --include="ca-certificates,tini,$deb" \
    --customize-hook="upload $here/packaging/image/rma-worker /usr/local/bin/rma-worker" \
    --customize-hook='chmod 0755 "$1/usr/local/bin/rma-worker"' \
    --customize-hook='rm -rf "$1/var/lib/apt/lists"/* "$1/var/cache/apt"/*' \
    "$suite" "$work/root.tar" "$mirror"

version=$(dpkg-deb --field "$deb" Version)
podman_here import --quiet \
    --change 'ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/rma-worker"]' \
    --change 'VOLUME /etc/meshd' \
    --change 'STOPSIGNAL SIGTERM' \
    --change 'LABEL org.opencontainers.image.title="rma-mesh-worker"' \
    --change "LABEL org.opencontainers.image.version=\"$version\"" \
    --change 'LABEL org.opencontainers.image.description="An RMA Mesh worker: joins with RMA_JOIN_URL and RMA_JOIN_TOKEN, then runs meshd"' \
    "$work/root.tar" "$tag" >/dev/null
mkdir -p "$(dirname "$out")"
rm -f "$out"
podman_here save --quiet --format docker-archive --output "$out" "$tag"
echo "build-image: $tag ($version) in $out ($(du -h "$out" | cut -f1))"
