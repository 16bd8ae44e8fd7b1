#!/bin/sh
# The transfer task of docs/memory.md: the reference CNN pretrained on Fashion-MNIST's
# classes 0-4 (T-shirt, trouser, pullover, dress, coat), then fine-tuned on a few samples
# of classes 5-9 (sandal, shirt, sneaker, bag, ankle boot) several ways: every parameter
# (AdamW at 1e-3 and 3e-3), LoRA r=8 over the F32 base, LoRA over an NF4 base (QLoRA), and
# from scratch. Prints each run's accuracy on the test images of classes 5-9, what trains,
# the checkpoint size and the peak memory.
#
#   N=500 E=20 bench/lora_transfer.sh [BUILD_DIR] [OUT_DIR]     (a few minutes on 2 cores)
set -eu
build=${1:-build}
out=${2:-$build/bench/lora-transfer}
qat=$(cd "$build" && pwd)/qat
mkdir -p "$out"
cd "$out"
run() { # name, then qat train arguments
    name=$1
    shift
    /usr/bin/time -f "%M" -o "$name.rss" "$qat" train --json --out "$name.st" "$@" > "$name.json" 2> "$name.err" || {
        cat "$name.err" >&2
        exit 1
    }
}
# N samples of classes 5-9 to fine-tune on (default 500), for E epochs (default 20); the
# test set is all 5,000 test images of classes 5-9.
N=${N:-500}
E=${E:-20}
PRE=${PRE:-0-4}
FT=${FT:-5-9}
[ -f pre.st ] || run pre --model cnn --classes "$PRE" --epochs 3
ft="--classes $FT --train-samples $N --epochs $E"
run full --from pre.st $ft --optim adamw --lr 0.001
run full3 --from pre.st $ft --optim adamw --lr 0.003
run lora --from pre.st $ft --lora r=8
run qlora --from pre.st $ft --lora r=8 --base nf4
run scratch --model cnn $ft --optim adamw --lr 0.001
num() { tr ',' '\n' < "$1" | grep "\"$2\"" | sed 's/.*: //'; }
echo "pre: accuracy on classes $PRE; the others on classes $FT ($N training samples, $E epochs)"
printf '%-8s %9s %12s %12s %12s %9s\n' run accuracy "trains" "frozen" "ckpt bytes" "RSS MiB"
for r in pre full full3 lora qlora scratch; do
    acc=$(num "$r.json" test_accuracy)
    trains=$(grep -o '[0-9]* parameters train' "$r.err" | cut -d' ' -f1 || true)
    frozen=$(grep -o '[0-9]* frozen' "$r.err" | cut -d' ' -f1 || true)
    printf '%-8s %8.2f%% %12s %12s %12s %9.1f\n' "$r" "$(echo "$acc * 100" | bc -l)" "${trains:-all}" "${frozen:-0}" \
        "$(stat -c %s "$r.st")" "$(echo "$(cat "$r.rss") / 1024" | bc -l)"
done
