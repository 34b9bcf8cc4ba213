#!/bin/sh
# Installs the host packages kist's tests and demo need, on a fresh Debian
# machine: the registry, skopeo and umoci as peers to compare with, the
# busybox binary the test images are built from. Quiet and quick when
# everything is already there.
set -eu

PACKAGES="docker-registry skopeo umoci busybox-static runc crun jq apache2-utils openssl iproute2 util-linux mount procps zstd debootstrap python3 dash shellcheck man-db groff-base bsdutils make nftables"
[ "$#" -gt 0 ] && PACKAGES="$PACKAGES $*"

missing=""
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done

if [ -n "$missing" ]; then
    echo "host-deps: installing$missing"
    if [ "$(id -u)" -ne 0 ]; then
        echo "host-deps: need root to install packages (run as root or install:$missing)" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "host-deps: cargo not found; install a Rust toolchain (rustup) first" >&2
    exit 1
fi
