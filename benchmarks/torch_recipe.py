"""The Fashion-MNIST recipe of ``volnet train --recipe fmnist-30min``, replicated in PyTorch (test-only
dependency), for the accuracy-vs-minutes comparison in BENCHMARKS.md.

Its defaults are the recipe's values (``volnet/train/recipes.py``; a test checks they agree). The same in
both: the training/validation split (volnet's ``load_data``: 55,000 / 5,000, seed 0), the normalisation
(the training split's mean and std), the augmentation code and settings (volnet's ``Augment`` on the raw
[0, 1] images: random crop with 2 zeros of padding + horizontal flip; drawn from
``default_rng([seed, epoch, batch])``, not volnet's ``batch_rng``, so the draws are independent of
volnet's, as in the measured run), the batch order (``epoch_permutation``), the net (4 CONV3 + BN + RELU,
two POOL2, FC-256 + BN + RELU, FC-10; He-normal initialisation as volnet), SGD with Nesterov momentum 0.9
and L2 weight decay 5e-4 added to the gradient, the learning rate of every step (volnet's
``make_schedule``: 2 epochs of linear warm-up from lr/10, cosine to 0), batch 128, the best epoch by
validation accuracy, the test set once at the end with the best weights. PyTorch runs with 2 threads in
one process (its own best on 2 cores).

Run: ``python benchmarks/torch_recipe.py --out runs/torch-recipe.jsonl`` (35 minutes on 2 cores); one JSON
line per epoch (``minutes`` since the process started, ``val_acc``, ...), then ``{"test_acc": ...}``.
``--limit-train N --epochs E`` for a quick check.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

T_START = time.perf_counter()

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def build_net(torch, c: int = 1, k: int = 10, hw: int = 28):
    nn = torch.nn

    def block(cin: int, cout: int) -> list:
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]

    net = nn.Sequential(*block(c, 32), *block(32, 32), nn.MaxPool2d(2), *block(32, 64), *block(64, 64),
                        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64 * (hw // 4) ** 2, 256),
                        nn.BatchNorm1d(256), nn.ReLU(), nn.Linear(256, k))
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)
    return net


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/torch-recipe.jsonl")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--weight-decay", type=float, default=5e-4)
    ap.add_argument("--warmup", type=float, default=2.0, help="epochs of linear warm-up from lr/10")
    ap.add_argument("--label-smoothing", type=float, default=0.0)
    ap.add_argument("--pad", type=int, default=2, help="random crop padding (0: no crop)")
    ap.add_argument("--limit-train", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import numpy as np
    import torch

    from volnet.cli.train import load_data
    from volnet.data import Augment, Normalizer, epoch_permutation, num_batches
    from volnet.optim import make_schedule

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train, val, test, used = load_data("fashion-mnist", seed=args.seed, limit_train=args.limit_train,
                                       quiet=True)
    norm = Normalizer().fit(train.x)
    aug = Augment(pad=args.pad, flip=True)
    xv = torch.from_numpy(norm.transform(val.x))
    xt = torch.from_numpy(norm.transform(test.x))
    net = build_net(torch, train.x.shape[1], train.num_classes, train.x.shape[2])
    opt = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=args.momentum, nesterov=True,
                          weight_decay=args.weight_decay)
    spe = num_batches(len(train), args.batch)
    sched = make_schedule("cosine", args.lr, total=args.epochs * spe,
                          warmup_steps=int(round(args.warmup * spe)))
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)

    def accuracy(x, y) -> float:
        net.eval()
        with torch.no_grad():
            pred = torch.cat([net(x[i:i + 512]).argmax(1) for i in range(0, len(x), 512)]).numpy()
        return float((pred == y).mean())

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    out = open(args.out, "w")
    best, best_state, step = -1.0, None, 0
    print(f"torch {torch.__version__}, {args.threads} threads, {used}: {len(train)} train / {len(val)} val, "
          f"{spe} steps per epoch", file=sys.stderr)
    for epoch in range(args.epochs):
        net.train()
        order = epoch_permutation(len(train), args.seed, epoch)
        loss_sum, seen = 0.0, 0
        t0 = time.perf_counter()
        for b in range(spe):
            idx = order[b * args.batch:(b + 1) * args.batch]
            rng = np.random.default_rng([args.seed, epoch, b])
            xb = torch.from_numpy(norm.transform(aug(train.x[idx], rng)))
            yb = torch.from_numpy(train.y[idx])
            for g in opt.param_groups:
                g["lr"] = sched(step)
            loss = loss_fn(net(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            loss_sum += float(loss.detach()) * len(idx)
            seen += len(idx)
        va = accuracy(xv, val.y)
        if va > best:
            best, best_state, best_epoch = va, copy.deepcopy(net.state_dict()), epoch + 1
        rec = {"epoch": epoch + 1, "minutes": round((time.perf_counter() - T_START) / 60, 3),
               "train_loss": loss_sum / seen, "val_acc": va,
               "images_per_s": round(seen / (time.perf_counter() - t0), 1)}
        print(json.dumps(rec), file=out, flush=True)
        print(json.dumps(rec), file=sys.stderr, flush=True)
    net.load_state_dict(best_state)
    rec = {"test_acc": accuracy(xt, test.y), "best_epoch": best_epoch, "best_val_acc": best,
           "minutes": round((time.perf_counter() - T_START) / 60, 3), "torch": torch.__version__}
    print(json.dumps(rec), file=out, flush=True)
    print(json.dumps(rec), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
