#!/bin/sh
# SmoothQuant on a real table with columns of very different ranges: the Wisconsin breast
# cancer data (569 tumours, 30 features from 0.001 to 4,254; sklearn ships it, Debian's
# python3-sklearn), an MLP 30-32-32-2 trained on the raw features, then quantized after
# training (int8, 400 calibration samples) several ways: per-tensor activations as usual,
# SmoothQuant at alpha 0.5 and chosen per layer (auto), per-token dynamic activations, and
# both. docs/quant.md, "SmoothQuant and per-token quantization", has the table.
#
#   bench/smoothquant.sh [BUILD_DIR] [OUT_DIR]          (about 10 seconds; SEEDS="1 2 3")
set -eu
build=${1:-build}
out=${2:-$build/bench/smoothquant}
qat=$(cd "$build" && pwd)/qat
src=${BREAST_CANCER_CSV:-/usr/lib/python3/dist-packages/sklearn/datasets/data/breast_cancer.csv}
[ -r "$src" ] || { echo "smoothquant.sh: $src missing (apt-get install python3-sklearn)" >&2; exit 1; }
mkdir -p "$out"
cd "$out"
# sklearn's file: a header line "569,30,malignant,benign", then 30 features and the label.
# qat's CSV: the label first. Every row whose index ends in 0, 1 or 2 is a test row (171),
# the rest train (398).
awk -F, 'NR > 1 { line = $NF; for (i = 1; i < NF; i++) line = line "," $i
                  print line > (((NR - 2) % 10 < 3) ? "test.csv" : "train.csv") }' "$src"
printf 'input 30\nlinear out=32\nrelu\nlinear out=32\nrelu\nlinear out=2\n' > mlp30.model
SEEDS=${SEEDS:-1 2 3 4 5}
SPECS="w8a8 w8a8,smooth w8a8,smooth=auto w8a8,token w8a8,token,smooth=auto"
field() { sed -n "s/.*\"$1\": \([0-9.]*\).*/\1/p"; }
printf '%-24s' "seed"
for s in $SEEDS; do printf ' %15s' "$s"; done
printf ' %15s\n' "mean"
row() { # label, then one "accuracy loss" line per seed on stdin
    awk -v label="$1" '{ a[NR] = $1; l[NR] = $2; sa += $1; sl += $2 }
        END { printf "%-24s", label; for (i = 1; i <= NR; i++) printf "  %6.2f%% %6.4f", 100 * a[i], l[i]
              printf "  %6.2f%% %6.4f\n", 100 * sa / NR, sl / NR }'
}
for s in $SEEDS; do
    "$qat" train --model mlp30.model --data train.csv --test-data test.csv --epochs 300 --batch 32 \
        --optim adamw --lr 3e-3 --seed "$s" --out "f$s.st" --quiet > /dev/null
done
for s in $SEEDS; do
    j=$("$qat" eval "f$s.st" --data test.csv --json)
    echo "$(echo "$j" | field test_accuracy) $(echo "$j" | field test_loss)"
done | row "float"
for spec in $SPECS; do
    for s in $SEEDS; do
        "$qat" calibrate --from "f$s.st" --data train.csv --samples 400 --quant "$spec" --out "q$s.st" > /dev/null
        j=$("$qat" eval "q$s.st" --data test.csv --json 2> /dev/null)
        echo "$(echo "$j" | field test_accuracy) $(echo "$j" | field test_loss)"
    done | row "$spec"
done
