#!/bin/bash
# Data-parallel training on MPI (docs/scaling.md): mpirun -np 2 against one process with
# the same global batch, determinism, resume with the same and another process count, and
# a killed process.
#
#   tests/test_mpi.sh BUILD_DIR [quick]
# quick (the sanitizer build): fewer samples, the same checks.
set -euo pipefail
qat=$(cd "$1" && pwd)/qat
quick=${2:-}
work=$(mktemp -d /tmp/qat-mpi-XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$work"
fail() { echo "test_mpi: $*" >&2; exit 1; }
# The sanitizer build's options reach every process (tests/CMakeLists.txt sets them).
export LSAN_OPTIONS=${LSAN_OPTIONS:-}
export ASAN_OPTIONS=${ASAN_OPTIONS:-}
export OPENBLAS_NUM_THREADS=1
MPI="mpirun --allow-run-as-root --oversubscribe -x LSAN_OPTIONS -x ASAN_OPTIONS -x OPENBLAS_NUM_THREADS -np"

# train_loss (column 4) of every epoch of two metric logs agree within a relative tolerance
agree() { # a.csv b.csv tol first_epochs
    paste -d, "$1" "$2" | awk -F, -v tol="$3" -v first="$4" -v n=$(($(head -1 "$1" | tr , '\n' | wc -l))) '
        NR > 1 && NR <= first + 1 { a = $4; b = $(n + 4); d = (a > b ? a - b : b - a) / (a > 0 ? a : -a)
                                   printf "epoch %d: %.6f vs %.6f (relative %.2g)\n", NR - 1, a, b, d
                                   if (d > tol) bad = 1 }
        END { exit bad }'
}
acc() { sed -n 's/.*"test_accuracy": \([0-9.]*\).*/\1/p' "$1"; }

# 1. The MLP (no batch norm): the same sums in another order, every epoch within 1e-4
#    (5 epochs of 64 steps).
common="--train-samples 4096 --test-samples 1000 --batch 64 --threads 1 --quiet"
cnn="--train-samples 1024 --test-samples 500 --batch 64 --lr 0.01 --threads 1 --quiet --epochs 16"
small="--train-samples 512 --test-samples 300 --batch 64 --lr 0.01 --threads 1 --quiet"
if [ "$quick" = quick ]; then
    common="--train-samples 1024 --test-samples 500 --batch 64 --threads 1 --quiet"
    cnn="--train-samples 1024 --test-samples 300 --batch 64 --lr 0.01 --threads 1 --quiet --epochs 4"
fi
"$qat" train --model mlp $common --epochs 5 --log mlp1.csv --out mlp1.st --json > mlp1.json
$MPI 2 "$qat" train --model mlp $common --epochs 5 --log mlp2.csv --out mlp2.st --report mlprep --json > mlp2.json
[ -s mlprep/report.html ] || fail "no report from the first process"
agree mlp1.csv mlp2.csv 1e-4 5 || fail "the MLP's losses differ between 1 and 2 processes"
python3 -c "import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); sys.exit(abs(a - b) > 0.01)" \
    "$(acc mlp1.json)" "$(acc mlp2.json)" || fail "MLP accuracy $(acc mlp1.json) vs $(acc mlp2.json)"

# 2. The reference CNN with synchronised batch norm, 256 steps (16 epochs of 16): the first
#    2 epochs (32 steps) within 1e-4, the accuracy at the end within noise (2 points). At lr 0.01: at the default 0.05
#    early training is chaotic enough that float rounding (the fused batch norm + ReLU +
#    pool of one process against the plain layers of synchronised batch norm) grows to a
#    percent by the second epoch (measured: 5e-5 in epoch 1, 1.2e-2 in epoch 2; at 0.01
#    2.8e-5 and 1.6e-4 by epoch 3).
"$qat" train --model cnn $cnn --log cnn1.csv --out cnn1.st --json > cnn1.json
$MPI 2 "$qat" train --model cnn $cnn --sync-bn --log cnn2.csv --out cnn2.st --json > cnn2.json
agree cnn1.csv cnn2.csv 1e-4 2 || fail "the CNN's first epochs differ between 1 and 2 processes (--sync-bn)"
python3 -c "import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); sys.exit(abs(a - b) > 0.02)" \
    "$(acc cnn1.json)" "$(acc cnn2.json)" || fail "CNN accuracy $(acc cnn1.json) vs $(acc cnn2.json)"

# 3. Determinism: the same run again writes the same bytes (a smaller run from here on).
$MPI 2 "$qat" train --model cnn $small --epochs 4 --sync-bn --out small2.st > /dev/null
$MPI 2 "$qat" train --model cnn $small --epochs 4 --sync-bn --out small2b.st > /dev/null
cmp small2.st small2b.st || fail "two runs with 2 processes wrote different checkpoints"

# 4. Resume with the same process count: byte-identical to the uninterrupted run; with
#    another (1 process, the same global batch): it runs.
$MPI 2 "$qat" train --model cnn $small --epochs 4 --sync-bn --until 2 --out part.st > /dev/null
$MPI 2 "$qat" train --resume part.st --out resumed.st --quiet > /dev/null
cmp small2.st resumed.st || fail "a resumed 2-process run differs from the uninterrupted one"
"$qat" train --resume part.st --out one.st --quiet > /dev/null || fail "a 2-process checkpoint does not resume in 1 process"

# 5. QAT with observers: the ranges stay identical on every process (one process writes;
#    a second run gives the same bytes).
$MPI 2 "$qat" train --from mlp1.st --quant w8a8 $common --epochs 1 --out q2.st > /dev/null
$MPI 2 "$qat" train --from mlp1.st --quant w8a8 $common --epochs 1 --out q2b.st > /dev/null
cmp q2.st q2b.st || fail "QAT with 2 processes is not deterministic"

# 6. Calibration, data-parallel: each process observes its share, the observers are merged
#    (histograms summed): the same accuracy as one process, the same bytes run after run.
q1=$("$qat" calibrate --from mlp1.st --quant w8a8,observer=kl --samples 1024 --out cal1.st --json)
q2=$($MPI 2 "$qat" calibrate --from mlp1.st --quant w8a8,observer=kl --samples 1024 --out cal2.st --json 2> /dev/null)
$MPI 2 "$qat" calibrate --from mlp1.st --quant w8a8,observer=kl --samples 1024 --out cal2b.st > /dev/null 2>&1
cmp cal2.st cal2b.st || fail "calibration with 2 processes is not deterministic"
a1=$(echo "$q1" | sed -n 's/.*"quant_accuracy": \([0-9.]*\).*/\1/p')
a2=$(echo "$q2" | sed -n 's/.*"quant_accuracy": \([0-9.]*\).*/\1/p')
python3 -c "import sys; sys.exit(abs(float(sys.argv[1]) - float(sys.argv[2])) > 0.002)" "$a1" "$a2" \
    || fail "calibration: $a1 with 1 process, $a2 with 2"

# 7. A process killed mid-run: mpirun stops the others (no hang) and fails; the last
#    checkpoint stays whole.
$MPI 2 "$qat" train --model cnn --train-samples 4096 --test-samples 200 --batch 64 --threads 1 --quiet \
    --epochs 200 --out killed.st > killed.out 2>&1 &
pid=$!
for _ in $(seq 600); do [ -s killed.st ] && break; sleep 0.1; done
[ -s killed.st ] || fail "no checkpoint after a minute"
victim=$(pgrep -f "qat train --model cnn --train-samples 4096" | grep -v "^$pid\$" | tail -1)
kill -9 "$victim"
for _ in $(seq 600); do kill -0 $pid 2> /dev/null || break; sleep 0.1; done
if kill -0 $pid 2> /dev/null; then kill -9 $pid; fail "mpirun still runs 60 s after a process died"; fi
if wait $pid; then fail "mpirun exited 0 after a process was killed"; fi
"$qat" eval killed.st --test-samples 100 > /dev/null 2>&1 || "$qat" inspect killed.st > /dev/null \
    || fail "the checkpoint left by the killed run does not load"

# 8. Only qat train and qat calibrate run under mpirun.
if $MPI 2 "$qat" eval mlp1.st > other.out 2>&1; then fail "qat eval ran under mpirun"; fi
grep -q "only qat train and qat calibrate" other.out || fail "no message for qat eval under mpirun: $(cat other.out)"
echo "test_mpi: all passed"
