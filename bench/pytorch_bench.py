"""PyTorch's side of bench/qat_bench: one measurement per process, printed as one JSON line.

Run by qat_bench (alternating with qat's own measurements), or by hand with Debian's
python3-torch 1.13:

    /usr/bin/python3 bench/pytorch_bench.py MODEL WHAT THREADS SECONDS

MODEL is cnn, mlp or dwcnn (the networks of examples/*.model); WHAT is one of
  train-fp32   SGD momentum training step, batch 64, cross entropy
  train-qat    the same step after torch.ao.quantization fuse_modules + prepare_qat
               (the engine's default QAT qconfig), eager mode
  infer-fp32   inference, batch 256, eval mode, no_grad
  infer-int8-onednn / infer-int8-qnnpack
               the QAT-prepared model converted to int8 on that engine, batch 256
  lat-fp32 / lat-int8-onednn / lat-int8-qnnpack
               batch-1 latency (median over the run)
The line holds samples/s (or latency in microseconds) and the process's peak RSS.
"""
import json, resource, sys, time

import torch
import torch.nn as nn
import torch.ao.quantization as tq


class Net(nn.Module):
    """QuantStub -> body -> DeQuantStub; `fuse` lists the module names to fuse."""

    def __init__(self, layers, fuse):
        super().__init__()
        self.quant, self.dequant = tq.QuantStub(), tq.DeQuantStub()
        self.body = nn.Sequential(*layers)
        self.fuse = [[f"body.{i}" for i in group] for group in fuse]

    def forward(self, x):
        return self.dequant(self.body(self.quant(x)))


def build(name):
    if name == "cnn":
        layers = [nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                  nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
                  nn.Flatten(), nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10)]
        fuse = [[0, 1, 2], [4, 5, 6], [9, 10]]
    elif name == "mlp":
        layers = [nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                  nn.Linear(128, 10)]
        fuse = [[1, 2], [3, 4]]
    elif name == "dwcnn":
        def block(cin, cout, stride):
            return [nn.Conv2d(cin, cin, 3, stride, 1, groups=cin), nn.BatchNorm2d(cin), nn.ReLU6(),
                    nn.Conv2d(cin, cout, 1), nn.BatchNorm2d(cout), nn.ReLU6()]
        layers = ([nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU6()] +
                  block(16, 32, 2) + block(32, 64, 2) + block(64, 128, 1) +
                  [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10)])
        # ReLU6 does not fuse in eager mode: conv+bn only.
        fuse = [[0, 1], [3, 4], [6, 7], [9, 10], [12, 13], [15, 16], [18, 19]]
    else:
        raise SystemExit(f"pytorch_bench: unknown model {name}")
    return Net(layers, fuse)


def qat_model(name, engine):
    torch.backends.quantized.engine = engine
    m = build(name).train()
    tq.fuse_modules_qat(m, m.fuse, inplace=True)
    m.qconfig = tq.get_default_qat_qconfig(engine)
    tq.prepare_qat(m, inplace=True)
    return m


def int8_model(name, engine):
    m = qat_model(name, engine)
    with torch.no_grad():  # a few batches so that observers hold real ranges
        for _ in range(4):
            m(torch.randn(64, 1, 28, 28))
    m.eval()
    return tq.convert(m)


def timed(fn, seconds, per_call):
    fn(); fn()  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn(); n += 1
    return n * per_call / (time.perf_counter() - t0)


def latency_us(fn, seconds):
    for _ in range(20): fn()
    times, t0 = [], time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a = time.perf_counter(); fn(); times.append(time.perf_counter() - a)
    times.sort()
    return 1e6 * times[len(times) // 2]


def main():
    name, what, threads, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    out = {"model": name, "what": what}
    if what in ("train-fp32", "train-qat"):
        m = build(name).train() if what == "train-fp32" else qat_model(name, "onednn")
        opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
        x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))

        def step():
            opt.zero_grad()
            nn.functional.cross_entropy(m(x), y).backward()
            opt.step()
        out["per_s"] = timed(step, seconds, 64)
    elif what.startswith("infer-") or what.startswith("lat-"):
        kind = what.split("-", 1)[1]
        if kind == "fp32":
            m = build(name).eval()
        else:
            m = int8_model(name, kind.split("-")[1])
        batch = 256 if what.startswith("infer-") else 1
        x = torch.randn(batch, 1, 28, 28)
        with torch.no_grad():
            if batch == 1:
                out["us"] = latency_us(lambda: m(x), seconds)
            else:
                out["per_s"] = timed(lambda: m(x), seconds, batch)
    else:
        raise SystemExit(f"pytorch_bench: unknown measurement {what}")
    out["rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
