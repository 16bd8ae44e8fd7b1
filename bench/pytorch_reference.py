"""PyTorch reference for qat's default recipe: the reference CNN on Fashion-MNIST.

SGD momentum 0.9, lr 0.05 with per-step cosine decay to 0, batch 64, inputs
(x/255 - 0.2860)/0.3530, 3 epochs, one thread. Prints test accuracy per epoch.
Run with Debian's python3-torch:  /usr/bin/python3 bench/pytorch_reference.py SEED
"""
import gzip, sys, numpy as np, torch, torch.nn as nn
seed = int(sys.argv[1]); torch.manual_seed(seed); torch.set_num_threads(1)
d = '/usr/share/datasets/fashion-mnist/'
def imgs(f): return np.frombuffer(gzip.open(d+f).read()[16:], np.uint8).reshape(-1,1,28,28)
def labs(f): return np.frombuffer(gzip.open(d+f).read()[8:], np.uint8)
xtr = (torch.tensor(imgs('train-images-idx3-ubyte.gz')).float()/255 - 0.2860)/0.3530
ytr = torch.tensor(labs('train-labels-idx1-ubyte.gz')).long()
xte = (torch.tensor(imgs('t10k-images-idx3-ubyte.gz')).float()/255 - 0.2860)/0.3530
yte = torch.tensor(labs('t10k-labels-idx1-ubyte.gz')).long()
m = nn.Sequential(nn.Conv2d(1,32,3,padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                  nn.Conv2d(32,64,3,padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
                  nn.Flatten(), nn.Linear(3136,128), nn.ReLU(), nn.Linear(128,10))
opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)
E, B = 3, 64; steps = E * ((60000 + B - 1)//B)
sch = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
for e in range(E):
    m.train(); perm = torch.randperm(60000)
    for i in range(0, 60000, B):
        idx = perm[i:i+B]; opt.zero_grad()
        nn.functional.cross_entropy(m(xtr[idx]), ytr[idx]).backward(); opt.step(); sch.step()
    m.eval()
    with torch.no_grad(): acc = sum((m(xte[i:i+500]).argmax(1) == yte[i:i+500]).sum().item() for i in range(0,10000,500))/100
    print(f"seed {seed} epoch {e+1} acc {acc:.2f}", flush=True)
