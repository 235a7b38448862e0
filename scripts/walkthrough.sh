#!/usr/bin/env bash
# A guided tour of rma-ca: a CA, an enrollment from a public key, inspection, verification by
# rma-ca and by openssl, revocation and a revocation list. Runs in a temporary directory that is
# always removed; exits non-zero if any step does not behave as shown.
set -euo pipefail

rma_ca=${RMA_CA:-$(cd "$(dirname "$0")/.." && pwd)/target/debug/rma-ca}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

step "1. The operator creates a CA for the mesh network (offline, in ./ca)"
run "$rma_ca" init --dir ca --name rma-mesh --network 10.42.0.0/16 --duration 5y

step "2. A worker generates its own keys; only the public half leaves the machine"
run "$rma_ca" keygen --out-key worker-1.key --out-pub worker-1.pub
ls -l worker-1.key worker-1.pub

step "3. The CA signs the public key: name, groups, and the next free mesh IP"
run "$rma_ca" sign --dir ca --name worker-1 --pub worker-1.pub --groups workers,gpu --out-crt worker-1.crt

step "4. What the certificate says"
run "$rma_ca" print worker-1.crt

step "5. Anyone holding ca.crt can check it; so can openssl"
run "$rma_ca" verify --ca ca/ca.crt worker-1.crt
run openssl verify -CAfile ca/ca.crt worker-1.crt

step "6. The CA's index"
run "$rma_ca" list --dir ca

step "7. The worker is retired: revoke it and publish a revocation list"
run "$rma_ca" revoke --dir ca worker-1 --reason "machine retired"
run "$rma_ca" crl --dir ca --out revoked.crl

step "8. With the list, the certificate is no longer trusted"
printf '$ %s\n' "$rma_ca verify --ca ca/ca.crt --crl revoked.crl worker-1.crt"
if "$rma_ca" verify --ca ca/ca.crt --crl revoked.crl worker-1.crt; then
    echo "walkthrough: a revoked certificate was trusted" >&2
    exit 1
fi

printf '\nwalkthrough: all 8 steps behaved as expected\n'
