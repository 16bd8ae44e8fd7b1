#!/bin/sh
# Installs the Debian packages qat needs to build and test, only those that are missing.
# Safe to run again: with everything present it does nothing and asks no network.
# Run as root (or through sudo) on Debian 12.
set -eu

# Build and test tools and libraries, and the demo's default data set (Fashion-MNIST in
# /usr/share/datasets/fashion-mnist), which the data tests read too. Then the outside
# judges the tests run: protobuf-c and the official onnx.proto with onnx.checker
# (python3-onnx) for ONNX files, the Arm cross compiler, its C library and qemu for the
# microcontroller firmware, Chromium (headless) for the HTML report, Open MPI for
# data-parallel training (mpirun), and Node.js for ONNX Runtime (below).
PACKAGES="build-essential cmake pkg-config libopenblas-dev libcmocka-dev zlib1g-dev libstb-dev libjpeg-dev libcjson-dev dataset-fashion-mnist
protobuf-c-compiler libprotobuf-c-dev python3-onnx gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm chromium
libopenmpi-dev openmpi-bin"

missing=""
for p in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done

# Node.js from Debian, unless a node and npm are already there (another packaging of them
# would conflict with Debian's).
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    missing="$missing nodejs npm"
fi

# ONNX Runtime, the judge of the ONNX tests: the npm package ships its own binaries, so
# --ignore-scripts (nothing downloaded at install time but the package itself). It goes
# into the checkout's .deps/, which the tests find (QAT_ORT_DIR in tests/CMakeLists.txt).
ORT_VERSION=1.31.1
top=$(cd "$(dirname "$0")/.." && pwd)
ort_installed() {
    [ -f "$top/.deps/node_modules/onnxruntime-node/package.json" ] &&
        grep -q "\"version\": \"$ORT_VERSION\"" "$top/.deps/node_modules/onnxruntime-node/package.json"
}

install_ort() {
    ort_installed && return 0
    echo "bootstrap: installing onnxruntime-node@$ORT_VERSION into $top/.deps" >&2
    mkdir -p "$top/.deps"
    (cd "$top/.deps" && npm install --no-audit --no-fund --ignore-scripts --prefix . "onnxruntime-node@$ORT_VERSION" >&2)
}

if [ -z "$missing" ]; then
    install_ort
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
install_ort
