#!/bin/sh
# The whole test suite, as CI runs it (.ci/run, through the README's test command): the
# normal build (build/) and, once more, a build with AddressSanitizer and
# UndefinedBehaviorSanitizer (build-asan/, -DQAT_SANITIZE=ON), each run by ctest on both
# cores. About 10 minutes on 2 cores (docs/reliability.md). Run scripts/bootstrap.sh
# first on a new machine.
set -eu
cd "$(dirname "$0")/.."
cmake -S . -B build
cmake --build build -j2
ctest --test-dir build --output-on-failure -j2
cmake -S . -B build-asan -DQAT_SANITIZE=ON
cmake --build build-asan -j2
ctest --test-dir build-asan --output-on-failure -j2
