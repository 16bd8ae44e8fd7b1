#!/bin/sh
# onnx_bench.sh - ONNX Runtime (int8 and fp32 ONNX exports) beside qat's int8 runtime on
# the same checkpoints, at batch 256 (2 threads) and batch 1 (docs/onnx.md):
#
#   bench/onnx_bench.sh [--rounds R] [--seconds S] STEM ...
#
# For each STEM it expects STEM.int8 (qat export), STEM.onnx (qat export --format onnx
# of the same quantized checkpoint) and STEM.fp32.onnx (qat export --format onnx of the
# float checkpoint it came from), and STEM.qdq.onnx and STEM.exact.onnx if they exist
# (--onnx-form qdq, exact). Images: the first 256 of Fashion-MNIST's test set. Each
# engine runs in one long-lived process per invocation (warm-up, then the median of R
# rounds of S seconds); prints one JSON line per model and engine. Run from the source
# tree after building into build/.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
rounds=5
seconds=2
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    *) break ;;
  esac
done
[ $# -ge 1 ] || { echo "usage: $0 [--rounds R] [--seconds S] STEM ..." >&2; exit 2; }
command -v node >/dev/null || { echo "$0: node not found: run scripts/bootstrap.sh" >&2; exit 1; }
images=$(mktemp /tmp/qat_onnx_bench_XXXXXX)
trap 'rm -f "$images"' EXIT
data=/usr/share/datasets/fashion-mnist
if [ -f $data/t10k-images-idx3-ubyte ]; then tail -c +17 $data/t10k-images-idx3-ubyte > "$images"
else zcat $data/t10k-images-idx3-ubyte.gz | tail -c +17 > "$images"; fi
int8=""; onnx=""
for s in "$@"; do
  int8="$int8 $s.int8"
  onnx="$onnx $s.onnx"
  [ -f "$s.qdq.onnx" ] && onnx="$onnx $s.qdq.onnx"
  [ -f "$s.exact.onnx" ] && onnx="$onnx $s.exact.onnx"
  onnx="$onnx $s.fp32.onnx"
done
"$here/build/bench/bench_qrt_file" "$images" --threads 2 --rounds "$rounds" --seconds "$seconds" $int8
node "$here/bench/ort_bench.js" "$here/.deps/node_modules" "$images" 1 28 28 --threads 2 --rounds "$rounds" \
  --seconds "$seconds" $onnx
