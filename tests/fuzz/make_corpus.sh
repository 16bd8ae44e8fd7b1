#!/bin/sh
# make_corpus.sh - writes the seed corpora of the fuzz harnesses (tests/fuzz/corpus/<name>/)
# from files qat itself writes: small data sets, models, checkpoints and int8 models of
# every kind the loaders read. Run from anywhere after building qat:
#
#     tests/fuzz/make_corpus.sh [path/to/qat]      (default: build/qat)
#
# Needs python3 (data files) and a C compiler with libstb-dev (images). Deterministic
# given qat's seeds; the results are committed, small (a few KB each).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
qat=$(cd "$(dirname "${1:-$top/build/qat}")" && pwd)/$(basename "${1:-$top/build/qat}")
work=$(mktemp -d /tmp/qat-corpus-XXXXXX)
trap 'rm -rf "$work"' EXIT
out="$here/corpus"
for t in checkpoint runtime idx cifar csv image model_text onnx; do
  rm -rf "$out/$t"
  mkdir -p "$out/$t"
done

# Data: an MNIST-style directory of 8x8 images (3 classes), a CSV table, CIFAR records;
# and the IDX harness's inputs (2-byte length of the images file, images, labels).
python3 - "$work" "$out" <<'PY'
import gzip, os, random, struct, sys
work, out = sys.argv[1], sys.argv[2]
rng = random.Random(7)
os.makedirs(f"{work}/idx", exist_ok=True)
def idx(n, h, w):
    lab = [rng.randrange(3) for _ in range(n)]
    img = bytearray()
    for l in lab:
        for y in range(h):
            for x in range(w):
                img.append(min(255, (x * 30 if l == 0 else y * 30 if l == 1 else (x + y) * 15) + rng.randrange(40)))
    return (struct.pack(">IIII", 0x803, n, h, w) + bytes(img), struct.pack(">II", 0x801, n) + bytes(lab))
for split, n in (("train", 96), ("t10k", 32)):
    i, l = idx(n, 8, 8)
    open(f"{work}/idx/{split}-images-idx3-ubyte", "wb").write(i)
    open(f"{work}/idx/{split}-labels-idx1-ubyte", "wb").write(l)
for k, (n, h, w) in enumerate(((4, 8, 8), (3, 28, 28), (1, 1, 1))):
    i, l = idx(n, h, w)
    open(f"{out}/idx/seed{k}", "wb").write(struct.pack("<H", len(i)) + i + l)
i, l = idx(2, 4, 4)
open(f"{out}/idx/gz_images", "wb").write(struct.pack("<H", len(gzip.compress(i, mtime=0))) + gzip.compress(i, mtime=0) + l)
rows = ["label,a,b,c,d"] + [f"{rng.randrange(3)},{rng.uniform(-1, 1):.4f},{rng.uniform(0, 1e4):.1f},{rng.randrange(9)},{rng.gauss(0, 1):.3e}" for _ in range(24)]
open(f"{work}/train.csv", "w").write("\n".join(rows) + "\n")
open(f"{out}/csv/header.csv", "w").write("\n".join(rows[:8]) + "\n")
open(f"{out}/csv/crlf.csv", "w").write("\r\n".join(r.replace(",", " , ") for r in rows[1:6]) + "\r\n")
rec = lambda lab: bytes([lab]) + bytes(rng.randrange(256) for _ in range(3072))
open(f"{out}/cifar/two_records.bin", "wb").write(rec(3) + rec(9))
PY

# Images: PNG (gray, RGB, RGBA), BMP, JPEG, written by stb_image_write.
cat > "$work/mkimg.c" <<'C'
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image_write.h>
int main(int argc, char **argv) {
    unsigned char px[16 * 12 * 4];
    for (int i = 0; i < 16 * 12 * 4; i++) px[i] = (unsigned char)(i * 7);
    const char *d = argv[1];
    char p[512];
    snprintf(p, sizeof p, "%s/gray.png", d); stbi_write_png(p, 16, 12, 1, px, 16);
    snprintf(p, sizeof p, "%s/rgb.png", d); stbi_write_png(p, 16, 12, 3, px, 48);
    snprintf(p, sizeof p, "%s/rgba.png", d); stbi_write_png(p, 5, 3, 4, px, 20);
    snprintf(p, sizeof p, "%s/rgb.bmp", d); stbi_write_bmp(p, 16, 12, 3, px);
    snprintf(p, sizeof p, "%s/rgb.jpg", d); stbi_write_jpg(p, 16, 12, 3, px, 80);
    snprintf(p, sizeof p, "%s/gray.jpg", d); stbi_write_jpg(p, 9, 7, 1, px, 50);
    return argc < 2;
}
C
cc -O1 -o "$work/mkimg" "$work/mkimg.c" -lm
"$work/mkimg" "$out/image"

# Models: the examples, and small ones with every layer kind.
cp "$top"/examples/*.model "$out/model_text/"
cat > "$work/tiny.model" <<'M'
input 1 8 8
conv2d out=4 kernel=3 pad=1
batchnorm
relu
maxpool kernel=2
flatten
linear out=10
M
cat > "$work/every.model" <<'M'
input 1 8 8
conv2d out=4 kernel=3 pad=1 bias=false
batchnorm
relu6
residual
  conv2d out=4 kernel=3 pad=1 groups=4
  batchnorm
  hardswish
  conv2d out=4 kernel=1
end
leaky_relu alpha=0.1
avgpool kernel=2
conv2d out=6 kernel=3 stride=2 pad=1
tanh
global_avgpool
linear out=5
sigmoid
dropout p=0.25
linear out=10
M
cp "$work/tiny.model" "$work/every.model" "$out/model_text/"
printf 'input 4\nlinear out=4\nrelu\nlinear out=3\n' > "$work/features.model"
cp "$work/features.model" "$out/model_text/"

# Checkpoints (float with optimizer state, PTQ at 8, 4 and 2 bits, QAT with PACT) and
# their int8 exports.
cd "$work"
"$qat" train --model tiny.model --data idx --epochs 1 --batch 16 --out tiny.f.st --quiet
"$qat" train --model every.model --data idx --epochs 1 --batch 16 --optim adam --lr 0.01 --out every.f.st --quiet
"$qat" train --model features.model --data train.csv --test-data train.csv --epochs 1 --batch 8 --out feat.f.st --quiet
"$qat" calibrate --from tiny.f.st --quant w8a8 --samples 32 --out tiny.q8.st --quiet
"$qat" calibrate --from tiny.f.st --quant w4a4 --samples 32 --out tiny.q4.st --quiet
"$qat" calibrate --from tiny.f.st --quant w2a8 --samples 32 --out tiny.q2.st --quiet
"$qat" calibrate --from every.f.st --quant w8a8 --samples 32 --out every.q8.st --quiet
"$qat" train --from tiny.f.st --data idx --quant w4a4,pact --calib-samples 32 --epochs 1 --batch 16 --out tiny.pact.st --quiet
# 8-bit optimizer state (U8 codes, F32 block maxima) and LoRA adapters over an NF4 base
# (the 4-bit base's U8 and F32 tensors, train/qlora.h).
"$qat" train --model tiny.model --data idx --epochs 1 --batch 16 --optim adamw8 --lr 0.01 --out tiny.adam8.st --quiet
"$qat" train --from tiny.f.st --data idx --epochs 1 --batch 16 --lora r=2 --base nf4 --out tiny.qlora.st --quiet
for c in tiny.f every.f feat.f tiny.q8 tiny.q4 tiny.pact tiny.adam8 tiny.qlora; do cp $c.st "$out/checkpoint/$c.safetensors"; done
for c in tiny.q8 tiny.q4 tiny.q2 every.q8 tiny.pact; do
  "$qat" export $c.st --out "$out/runtime/$c.int8" > /dev/null
done

# ONNX: the import fixtures (PyTorch's exports) and qat's own float export.
cp "$top"/tests/fixtures/onnx/*.onnx "$out/onnx/"
"$qat" export tiny.f.st --format onnx --out "$out/onnx/qat_tiny_float.onnx" > /dev/null
du -sh "$out"
