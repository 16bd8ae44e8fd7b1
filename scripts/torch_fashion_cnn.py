"""Trains a CNN on Fashion-MNIST in PyTorch and exports it for `qat import`
(docs/onnx-import.md, the acceptance measurement).

    /usr/bin/python3 scripts/torch_fashion_cnn.py --out DIR [--epochs 2] [--threads 2]

Reads the IDX files (qat's default data, /usr/share/datasets/fashion-mnist), normalises as
qat does ((p/255 - 0.2860) / 0.3530), trains qat's reference CNN architecture with module
names (conv1, bn1, conv2, bn2, fc1, fc2) by SGD (momentum 0.9, lr 0.05, cosine, batch 64),
then writes to DIR:
  cnn.onnx              torch.onnx.export, eval mode (BatchNormalization folded into Conv)
  cnn_bn.onnx           the same, exported in training mode (BatchNormalization kept)
  cnn.safetensors       the state_dict, names sorted (as the safetensors library writes)
  cnn.model             the qat model file of the architecture, for the state_dict import
  torch_accuracy.txt    the float model's test accuracy in PyTorch (10,000 images)
"""
import argparse
import copy
import gzip
import os
import struct
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures"))
from gen_checkpoint import write_safetensors  # noqa: E402

MEAN, STD = 0.2860, 0.3530

MODEL_FILE = """# qat's reference CNN, as scripts/torch_fashion_cnn.py trains it in PyTorch
input 1 28 28
conv2d out=32 kernel=3 pad=1
batchnorm
relu
maxpool kernel=2
conv2d out=64 kernel=3 pad=1
batchnorm
relu
maxpool kernel=2
flatten
linear out=128
relu
linear out=10
"""


def read_idx(path):
    with gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    nd = magic & 0xFF
    dims = struct.unpack(">" + "I" * nd, data[4:4 + 4 * nd])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * nd).reshape(dims)


def load(root, split):
    prefix = "train" if split == "train" else "t10k"
    def find(kind):
        for ext in ("-idx%d-ubyte.gz" % (3 if kind == "images" else 1), "-idx%d-ubyte" % (3 if kind == "images" else 1)):
            p = os.path.join(root, "%s-%s%s" % (prefix, kind, ext))
            if os.path.exists(p):
                return p
        raise SystemExit("no %s %s in %s" % (split, kind, root))
    x = read_idx(find("images")).astype(np.float64)
    y = read_idx(find("labels")).astype(np.int64)
    # The same arithmetic as qat's loader (data/loader.c): in double, with the float32
    # mean and std, rounded to float32 once.
    x = ((x / 255.0 - float(np.float32(MEAN))) / float(np.float32(STD))).astype(np.float32)
    return torch.from_numpy(x[:, None]), torch.from_numpy(y)


class Cnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(64)
        self.fc1 = nn.Linear(64 * 7 * 7, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


def accuracy(model, x, y):
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), 500):
            correct += (model(x[i:i + 500]).argmax(1) == y[i:i + 500]).sum().item()
    return correct / len(x)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    os.makedirs(a.out, exist_ok=True)
    xtr, ytr = load(a.data, "train")
    xte, yte = load(a.data, "test")
    model = Cnn()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    batch = 64
    steps = a.epochs * ((len(xtr) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = torch.Generator().manual_seed(a.seed)
    for epoch in range(a.epochs):
        model.train()
        perm = torch.randperm(len(xtr), generator=g)
        for i in range(0, len(xtr), batch):
            idx = perm[i:i + batch]
            loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        print("epoch %d: test accuracy %.4f" % (epoch + 1, accuracy(model, xte, yte)), flush=True)
    model.eval()
    acc = accuracy(model, xte, yte)
    x1 = xte[:1]
    torch.onnx.export(model, x1, os.path.join(a.out, "cnn.onnx"), input_names=["input"],
                      output_names=["logits"], opset_version=13)
    # Training-mode export keeps BatchNormalization, but tracing in training mode would
    # update the running statistics: export a copy whose BN momentum is 0 (statistics kept).
    bn_copy = copy.deepcopy(model)
    for mod in bn_copy.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.momentum = 0.0
    torch.onnx.export(bn_copy, x1, os.path.join(a.out, "cnn_bn.onnx"), input_names=["input"],
                      output_names=["logits"], opset_version=13, training=torch.onnx.TrainingMode.TRAINING,
                      do_constant_folding=False)
    write_safetensors(os.path.join(a.out, "cnn.safetensors"),
                      [(k, v.numpy()) for k, v in sorted(model.state_dict().items())], {"format": "pt"})
    with open(os.path.join(a.out, "cnn.model"), "w") as f:
        f.write(MODEL_FILE)
    with open(os.path.join(a.out, "torch_accuracy.txt"), "w") as f:
        f.write("%.4f\n" % acc)
    print("PyTorch float test accuracy %.2f%% (%d images); wrote %s" % (100 * acc, len(xte), a.out))


if __name__ == "__main__":
    main()
