#!/bin/bash
# Data-parallel scaling on one machine (docs/scaling.md, docs/benchmarks.md): training
# samples/s of the reference CNN and the MLP at batch 64, in alternating rounds of
#   1 process x 1 thread, 1 process x 2 threads, mpirun -np 2 x 1 thread each,
# medians over ROUNDS (default 3), then the ring all-reduce of each model's gradient
# (bench_allreduce) and the communication share of a 2-process step. Prints the load
# average before and after: compare only on a quiet machine.
#
#   bench/mpi_scaling.sh [BUILD_DIR]
set -euo pipefail
build=$(cd "${1:-build}" && pwd)
qat=$build/qat
rounds=${ROUNDS:-3}
work=$(mktemp -d /tmp/qat-scaling-XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$work"
export OPENBLAS_NUM_THREADS=1
MPI="mpirun --allow-run-as-root --oversubscribe -x OPENBLAS_NUM_THREADS -np 2"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
rate() { sed -n 's/.*"samples_per_s": \([0-9.]*\).*/\1/p'; }
calc() { awk "BEGIN { print $1 }"; }
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
for model in cnn mlp; do
    args="--model $model --train-samples 8192 --test-samples 100 --batch 64 --epochs 1 --quiet --json"
    : > a.txt; : > b.txt; : > c.txt
    for r in $(seq "$rounds"); do
        "$qat" train $args --threads 1 --out x.st | rate >> a.txt
        "$qat" train $args --threads 2 --out x.st | rate >> b.txt
        $MPI "$qat" train $args --threads 1 --out x.st 2> /dev/null | rate >> c.txt
    done
    a=$(median < a.txt); b=$(median < b.txt); c=$(median < c.txt)
    printf '%s b64 samples/s: 1 process x 1 thread %.0f, 1 x 2 threads %.0f (%.2fx), 2 processes x 1 thread %.0f (%.2fx)\n' \
        "$model" "$a" "$b" "$(calc "$b / $a")" "$c" "$(calc "$c / $a")"
    n=$("$qat" inspect $model | sed -n 's/.*(\([0-9]*\) parameters).*/\1/p')
    ar=$($MPI "$build/bench/bench_allreduce" "$n" 200 2> /dev/null)
    echo "  $ar"
    ms=$(echo "$ar" | sed -n 's/.*median \([0-9.]*\) ms.*/\1/p')
    printf '  a 2-process step (64 samples) takes %.2f ms, of which the gradient sum %.3f ms (%.1f%%)\n' \
        "$(calc "64000 / $c")" "$ms" "$(calc "100 * $ms / (64000 / $c)")"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
