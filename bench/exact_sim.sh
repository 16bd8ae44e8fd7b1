#!/bin/sh
# The table of docs/quant.md "The exact simulation": for the four example models, a float
# model (2 epochs), then 1 epoch of QAT at w8a8 and at w4a4 + PACT with the exact
# simulation (the default) and with the float one, each evaluated as it deploys (its int8
# model on the runtime) beside its simulation; then the float-trained checkpoints with
# every simulation (qat eval --sim), which says what each part of the exact one buys.
# Usage: bench/exact_sim.sh [BUILD_DIR] [WORK_DIR]   (about 25 minutes on 2 cores)
set -eu
Q=${1:-build}/qat
W=${2:-/tmp/qat_exact_sim}
top=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$W"
row() { # checkpoint [--sim S]: runtime accuracy, simulation accuracy, agreement
    "$Q" eval "$@" --json | sed -e 's/.*"test_accuracy": \([0-9.]*\).*"fake_quant_accuracy": \([0-9.]*\), "top1_agreement": \([0-9.]*\).*/runtime \1  simulation \2  agreement \3/'
}
for m in cnn dwcnn mlp resnet_small; do
    [ -f "$W/$m.f.st" ] || "$Q" train --model "$top/examples/$m.model" --epochs 2 --out "$W/$m.f.st" --quiet
    for spec in w8a8 w4a4,pact; do
        for sim in exact float; do
            ck="$W/$m.$(echo "$spec" | tr -d ',').$sim.st"
            [ -f "$ck" ] || "$Q" train --from "$W/$m.f.st" --quant "$spec,sim=$sim" --epochs 1 --out "$ck" --quiet
            echo "$m $spec trained with sim=$sim: $(row "$ck")"
        done
        for sim in float fixed exact; do
            echo "$m $spec trained with sim=float, evaluated with --sim $sim: $(row "$W/$m.$(echo "$spec" | tr -d ',').float.st" --sim $sim)"
        done
    done
done
