#!/bin/bash
# kill_test.sh QAT [N] - SIGKILLs qat train and qat export at random moments, N times in
# all (default 200, half each), and checks what docs/reliability.md promises:
#   - the target is always absent, the old file, or a complete new file (never a mix);
#   - a killed training run resumed from its checkpoint ends byte-identical to a run
#     that was never killed;
#   - a temporary file a kill leaves behind is removed by the next successful write.
# ctest runs it (kill_test). Prints how many kills hit a write (left a temporary file).
set -u
qat=$1
n=${2:-200}
w=$(mktemp -d /tmp/qat-kill-XXXXXX)
trap 'rm -rf "$w"' EXIT
cd "$w"
fail() { echo "kill_test: $*" >&2; exit 1; }

# An MNIST-style data set of 8x8 images (3 classes) and an MLP wide enough that
# checkpoint writes take a while.
mkdir -p data
python3 - data <<'PY'
import random, struct, sys
rng = random.Random(1)
for split, n in (("train", 1000), ("t10k", 100)):
    lab = [i % 3 for i in range(n)]
    img = bytes(min(255, 60 * l + rng.randrange(100)) for l in lab for _ in range(64))
    open(f"{sys.argv[1]}/{split}-images-idx3-ubyte", "wb").write(struct.pack(">IIII", 0x803, n, 8, 8) + img)
    open(f"{sys.argv[1]}/{split}-labels-idx1-ubyte", "wb").write(struct.pack(">II", 0x801, n) + bytes(lab))
PY
printf 'input 1 8 8\nflatten\nlinear out=512\nrelu\nlinear out=512\nrelu\nlinear out=10\n' > m.model
T="train --model m.model --data data --batch 32 --epochs 4 --seed 1 --threads 1 --quiet"
start=$(date +%s%N)
$qat $T --out ref.st > /dev/null || fail "the reference run failed"
ms=$(( ($(date +%s%N) - start) / 1000000 ))
$qat calibrate --from ref.st --data data --samples 64 --out qa.st --quiet > /dev/null || fail "calibrate"
$qat calibrate --from ref.st --data data --samples 64 --quant w4a8 --out qb.st --quiet > /dev/null || fail "calibrate"
$qat export qa.st --out a.int8 > /dev/null && $qat export qb.st --out b.int8 > /dev/null || fail "export"

rnd() { awk -v s="$RANDOM$RANDOM" -v m="$1" 'BEGIN { srand(s); printf "%.4f", rand() * m / 1000 }'; }
hits=0
half=$((n / 2))
for i in $(seq 1 $half); do
  rm -f k.st
  $qat $T --out k.st > /dev/null 2>&1 &
  pid=$!
  sleep "$(rnd "$ms")"
  kill -9 $pid 2> /dev/null
  wait $pid 2> /dev/null
  ls k.st.tmp-* > /dev/null 2>&1 && hits=$((hits + 1))
  if [ -e k.st ]; then
    $qat inspect k.st > /dev/null 2>&1 || fail "kill $i of train: k.st is not a complete checkpoint"
    $qat train --resume k.st --quiet > /dev/null || fail "kill $i: resume failed"
  else
    $qat $T --out k.st > /dev/null || fail "kill $i: rerun failed"
  fi
  cmp -s k.st ref.st || fail "kill $i of train: the resumed run differs from the uninterrupted one"
  ls k.st.tmp-* > /dev/null 2>&1 && fail "kill $i: a temporary file survived the next write"
done
cp a.int8 e.int8
for i in $(seq 1 $((n - half))); do
  src=qb.st; want=b.int8
  cmp -s e.int8 b.int8 && src=qa.st && want=a.int8
  old=$(cmp -s e.int8 a.int8 && echo a.int8 || echo b.int8)
  $qat export $src --out e.int8 > /dev/null 2>&1 &
  pid=$!
  sleep "$(rnd 40)"
  kill -9 $pid 2> /dev/null
  wait $pid 2> /dev/null
  ls e.int8.tmp-* > /dev/null 2>&1 && hits=$((hits + 1))
  cmp -s e.int8 $old || cmp -s e.int8 $want || fail "kill $i of export: e.int8 is neither the old nor the new file"
  $qat export $src --out e.int8 > /dev/null || fail "export after kill $i"
  cmp -s e.int8 $want || fail "export after kill $i: wrong file"
  ls e.int8.tmp-* > /dev/null 2>&1 && fail "export kill $i: a temporary file survived the next write"
done
echo "kill_test: $n SIGKILLs ($half of train, a run takes ${ms} ms; $((n - half)) of export): every target old or complete, every resume byte-identical; $hits kill(s) left a temporary file, removed by the next write"
