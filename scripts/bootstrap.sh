#!/bin/sh
# Installs the Debian packages qat needs to build and test, only those that are missing.
# Safe to run again: with everything present it does nothing and asks no network.
# Run as root (or through sudo) on Debian 12.
set -eu

# Build and test tools and libraries, and the demo's default data set (Fashion-MNIST in
# /usr/share/datasets/fashion-mnist), which the data tests read too.
PACKAGES="build-essential cmake pkg-config libopenblas-dev libcmocka-dev zlib1g-dev libstb-dev libcjson-dev dataset-fashion-mnist"

missing=""
for p in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done

if [ -z "$missing" ]; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=sudo
    else
        echo "bootstrap: missing packages:$missing; run this script as root to install them" >&2
        exit 1
    fi
else
    SUDO=
fi

echo "bootstrap: installing$missing" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >&2
