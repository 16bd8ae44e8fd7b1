"""PyTorch's side of bench/qat_bench: a long-lived peer driven over a pipe.

qat_bench starts it as

    MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=1073741824 \\
    OPENBLAS_NUM_THREADS=1 /usr/bin/python3 bench/pytorch_bench.py serve THREADS

(glibc then keeps the ~18 MB a CNN step frees instead of returning it to the kernel and
faulting it in again on the next step; OpenBLAS's own threads no longer compete with
torch's OpenMP threads) and sends one command per line on stdin, answered by one JSON
line on stdout:

    prep ITEM            build ITEM and warm it up (5 calls)        -> {"ok": true, ...}
    run ITEM SECONDS     call ITEM back to back for SECONDS         -> {"calls": N,
                         "median_s": per-call median, "wall_s": elapsed, "batch": B}
    rss                  (the answer's rss_mib: every answer carries the peak RSS)
    quit

By hand: /usr/bin/python3 bench/pytorch_bench.py once ITEM SECONDS (same environment).

ITEM is KIND:MODEL:VARIANT:LAYOUT:BATCH, MODEL cnn, mlp or dwcnn (examples/*.model),
LAYOUT nchw or cl (torch.channels_last for the model and the input), and KIND
  train-fp32  SGD momentum training step, cross entropy (VARIANT: eager)
  train-qat   the same step, eager QAT: fuse_modules_qat + prepare_qat with the onednn
              engine's default QAT qconfig (VARIANT: eager)
  fp32        inference, eval, no_grad; VARIANT eager or frozen (torch.jit.trace +
              torch.jit.freeze)
  int8        the QAT-prepared model calibrated on 4 random batches and converted;
              VARIANT onednn (eager), onednn-frozen (trace + freeze) or qnnpack (eager)
Every call of an int8 item first sets torch.backends.quantized.engine to its engine.
"""
import json, resource, sys, time, warnings

import torch
import torch.nn as nn
import torch.ao.quantization as tq

warnings.filterwarnings("ignore")


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
    """The networks of examples/cnn.model, mlp.model and dwcnn.model, layer for layer."""
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
        raise ValueError(f"unknown model {name}")
    return Net(layers, fuse)


def qat_model(name, engine):
    torch.backends.quantized.engine = engine
    m = build(name).train()
    tq.fuse_modules_qat(m, m.fuse, inplace=True)
    m.qconfig = tq.get_default_qat_qconfig(engine)
    tq.prepare_qat(m, inplace=True)
    return m


def int8_model(name, engine, layout):
    m = qat_model(name, engine)
    with torch.no_grad():  # a few batches so that observers hold real ranges
        for _ in range(4):
            m(to_layout(torch.randn(64, 1, 28, 28), layout))
    m.eval()
    return tq.convert(m)


def to_layout(t, layout):
    return t.contiguous(memory_format=torch.channels_last) if layout == "cl" else t


def make(item):
    """Returns (fn, batch): fn() is one call of the item."""
    kind, name, variant, layout, batch = item.split(":")
    batch = int(batch)
    if layout not in ("nchw", "cl"):
        raise ValueError(f"unknown layout {layout}")
    x = to_layout(torch.randn(batch, 1, 28, 28), layout)
    if kind in ("train-fp32", "train-qat"):
        m = build(name).train() if kind == "train-fp32" else qat_model(name, "onednn")
        if layout == "cl":
            m = m.to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
        y = torch.randint(0, 10, (batch,))

        def step():
            opt.zero_grad()
            nn.functional.cross_entropy(m(x), y).backward()
            opt.step()
        return step, batch
    if kind == "fp32":
        m = build(name).eval()
        if layout == "cl":
            m = m.to(memory_format=torch.channels_last)
        engine = None
    elif kind == "int8":
        engine = "qnnpack" if variant == "qnnpack" else "onednn"
        m = int8_model(name, engine, layout)
    else:
        raise ValueError(f"unknown kind {kind}")
    if variant.endswith("frozen"):
        with torch.no_grad():
            m = torch.jit.freeze(torch.jit.trace(m, x))
    elif variant not in ("eager", "onednn", "qnnpack"):
        raise ValueError(f"unknown variant {variant}")

    def infer():
        if engine:
            torch.backends.quantized.engine = engine
        with torch.no_grad():
            m(x)
    return infer, batch


def run(fn, seconds):
    times = []
    t0 = time.perf_counter()
    while True:
        a = time.perf_counter()
        fn()
        b = time.perf_counter()
        times.append(b - a)
        if b - t0 >= seconds:
            break
    wall = time.perf_counter() - t0
    times.sort()
    return {"calls": len(times), "median_s": times[len(times) // 2], "wall_s": wall}


def serve(threads):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    items = {}
    print(json.dumps({"ok": True, "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "engines": torch.backends.quantized.supported_engines}), flush=True)
    for line in sys.stdin:
        w = line.split()
        if not w:
            continue
        try:
            if w[0] == "quit":
                break
            if w[0] == "prep":
                fn, batch = make(w[1])
                for _ in range(5):
                    fn()
                items[w[1]] = (fn, batch)
                out = {"ok": True}
            elif w[0] == "rss":
                out = {"ok": True}
            elif w[0] == "run":
                fn, batch = items[w[1]]
                out = run(fn, float(w[2]))
                out["batch"] = batch
            else:
                raise ValueError(f"unknown command {w[0]}")
        except Exception as e:  # answer, so that the driver can go on without this item
            out = {"error": f"{type(e).__name__}: {e}"}
        out["rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(out), flush=True)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "serve":
        serve(int(sys.argv[2]))
    elif len(sys.argv) == 4 and sys.argv[1] == "once":
        torch.set_num_threads(2)
        torch.manual_seed(0)
        fn, batch = make(sys.argv[2])
        for _ in range(5):
            fn()
        out = run(fn, float(sys.argv[3]))
        out["per_s_median"] = batch / out["median_s"]
        out["per_s_sustained"] = out["calls"] * batch / out["wall_s"]
        print(json.dumps(out))
    else:
        raise SystemExit("usage: pytorch_bench.py serve THREADS | once ITEM SECONDS")


if __name__ == "__main__":
    main()
