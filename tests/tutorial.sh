#!/bin/bash
# Runs every ```sh block of docs/tutorial.md, in order, in a fresh directory with the
# examples beside it and qat and the example programs on PATH, as a reader would; any
# failing command fails the test. Then checks what the text says the commands leave.
#
#   tests/tutorial.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$(cd "$1" && pwd)
src=$(cd "$2" && pwd)
work=$(mktemp -d /tmp/qat-tutorial-XXXXXX)
trap 'rm -rf "$work"' EXIT
ln -s "$src/examples" "$work/examples"
export PATH="$build:$build/examples:$PATH"
awk '/^```sh$/ { on = 1; next } /^```$/ { on = 0 } on' "$src/docs/tutorial.md" > "$work/commands.sh"
n=$(grep -c . "$work/commands.sh")
[ "$n" -ge 15 ] || { echo "tutorial.sh: only $n commands found in docs/tutorial.md" >&2; exit 1; }
cd "$work"
echo "tutorial.sh: $n commands"
bash -euo pipefail -x commands.sh
for f in tiny.int8 dw.st dw-ptq.st dw-qat.st dw-pact/report.html dw.int8 dw-a4-kl.st; do
    [ -s "$f" ] || { echo "tutorial.sh: $f was not written" >&2; exit 1; }
done
grep -q "error" run.txt && { echo "tutorial.sh: the firmware reported an error" >&2; exit 1; }
[ -s fw_dwcnn/firmware.elf ] || { echo "tutorial.sh: no firmware" >&2; exit 1; }
qat inspect dw.int8 --op 9 | grep -q "MultiplyByQuantizedMultiplier = " || { echo "tutorial.sh: inspect --op" >&2; exit 1; }
echo "tutorial.sh: every command passed"
