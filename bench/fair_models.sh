#!/bin/sh
# fair_models.sh - the exported models bench/qat_bench compares: for each of the
# reference CNN, the MLP and the DW-CNN (examples/*.model), one epoch of float training
# on Fashion-MNIST, post-training quantization (w8a8, 512 calibration samples), and the
# exports both sides run:
#
#   bench/fair_models.sh QAT_BINARY OUTDIR [MODEL ...]      (MODEL: cnn mlp dwcnn)
#
# writes OUTDIR/MODEL.fp32.st, MODEL.q.st (checkpoints), MODEL.int8 (qat's runtime),
# MODEL.onnx (qat export --format onnx of MODEL.q.st: the int8 ONNX ORT runs) and
# MODEL.fp32.onnx (qat export --format onnx of the float checkpoint). Speed does not
# depend on accuracy; one epoch only keeps activations realistic. About a minute.
set -eu
qat=$1
out=$2
shift 2
[ $# -gt 0 ] || set -- cnn mlp dwcnn
here=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
for m in "$@"; do
  "$qat" train --model "$here/examples/$m.model" --epochs 1 --threads 2 --quiet \
    --out "$out/$m.fp32.st" >/dev/null
  "$qat" calibrate --from "$out/$m.fp32.st" --samples 512 --quiet --out "$out/$m.q.st" >/dev/null
  "$qat" export "$out/$m.q.st" --out "$out/$m.int8" >/dev/null
  "$qat" export "$out/$m.q.st" --format onnx --out "$out/$m.onnx" >/dev/null
  "$qat" export "$out/$m.fp32.st" --format onnx --out "$out/$m.fp32.onnx" >/dev/null
done
