"""The ``fmnist-30min`` recipe (volnet/train/recipes.py) replicated in PyTorch, for the accuracy-vs-minutes
comparison (``benchmarks/plot_recipe.py`` draws both curves).

Same data and split (volnet's loader: the same 55,000 / 5,000 / 10,000 images, the same Normalizer), the
same augmented batches (volnet's ``batches`` with the recipe's seed: crop + flip draws are identical),
the same net (CONV3-32 x2, POOL2, CONV3-64 x2, POOL2, FC-256, BN everywhere; PyTorch's default init),
SGD Nesterov with weight decay, OneCycleLR (cosine, no momentum cycling: volnet keeps the momentum),
label smoothing, and the test set once at the end with the best-validation weights (as volnet). Each
epoch appends ``{"epoch", "minutes", "train_loss", "val_acc"}`` to ``--out`` (JSON lines; minutes: the
training and validation time so far, as volnet's metrics.jsonl ``seconds``), the last line
``{"test_acc", "minutes", ...}``.

    python benchmarks/torch_recipe.py --out runs/torch-recipe.jsonl               # the full recipe
    python benchmarks/torch_recipe.py --epochs 1 --limit-train 512 --out /tmp/t.jsonl   # a smoke run
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build_net(torch, classes: int):
    nn = torch.nn

    def block(c_in: int, c_out: int) -> list:
        return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]

    return nn.Sequential(*block(1, 32), *block(32, 32), nn.MaxPool2d(2), *block(32, 64), *block(64, 64),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64 * 7 * 7, 256), nn.BatchNorm1d(256),
                         nn.ReLU(), nn.Linear(256, classes))


def accuracy(torch, net, x: np.ndarray, y: np.ndarray, norm, batch: int = 256) -> float:
    net.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            xb = torch.from_numpy(norm(x[i:i + batch]))
            correct += int((net(xb).argmax(1).numpy() == y[i:i + batch]).sum())
    return correct / max(len(x), 1)


def main(argv: list[str] | None = None) -> int:
    from volnet.cli.train import _augment, load_data
    from volnet.data import Normalizer, batches, num_batches
    from volnet.train.evaluate import prepare
    from volnet.train.recipes import get_recipe

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", default="fmnist-30min")
    p.add_argument("--epochs", type=int, help="override the recipe's epochs")
    p.add_argument("--limit-train", type=int, help="only the first N training images (a smoke run)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2: the machine's cores)")
    p.add_argument("--out", required=True, help="JSON lines file to write")
    args = p.parse_args(argv)
    r = get_recipe(args.recipe)
    epochs = args.epochs if args.epochs is not None else r["epochs"]
    seed = r.get("seed", 0)

    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(seed)
    train, val, test, used = load_data(r["data"], val=r.get("val"), seed=seed, limit_train=args.limit_train)
    normalizer = Normalizer().fit(train.x)

    def norm(x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(prepare(x, normalizer, np.float32))

    aug = _augment(r.get("augment", "default"), train)
    net = build_net(torch, train.num_classes)
    opt = torch.optim.SGD(net.parameters(), lr=r["lr"], momentum=r.get("momentum", 0.9), nesterov=True,
                          weight_decay=r.get("weight_decay", 0.0))
    spe = num_batches(len(train), r["batch"])
    total = max(1, epochs * spe)
    warm = float(r.get("warmup", 0.0))
    pct = warm / epochs if 0 < warm < epochs else 0.3
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=r["lr"], total_steps=total, pct_start=pct,
                                                anneal_strategy="cos", cycle_momentum=False)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=r.get("label_smoothing", 0.0))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    elapsed, best, best_state = 0.0, -1.0, None
    print(f"torch {torch.__version__}, {args.threads} threads: {used} {len(train)} train / "
          f"{0 if val is None else len(val)} val, {epochs} epochs of {spe} steps", file=sys.stderr)
    for epoch in range(epochs):
        t0 = time.perf_counter()
        net.train()
        loss_sum, seen = 0.0, 0
        for xb, yb in batches(train.x, train.y, r["batch"], shuffle=True, seed=seed, epoch=epoch,
                              augment=aug):
            xt, yt = torch.from_numpy(norm(xb)), torch.from_numpy(yb.astype(np.int64))
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(xt), yt)
            loss.backward()
            opt.step()
            if sched.last_epoch < total - 1:
                sched.step()
            loss_sum += float(loss.detach()) * len(yb)
            seen += len(yb)
        acc = accuracy(torch, net, val.x, val.y, norm) if val is not None else float("nan")
        elapsed += time.perf_counter() - t0
        if val is None or acc > best:
            best, best_state = acc, copy.deepcopy(net.state_dict())
        rec = {"epoch": epoch + 1, "minutes": round(elapsed / 60, 4), "train_loss": loss_sum / max(seen, 1),
               "val_acc": acc, "lr": opt.param_groups[0]["lr"]}
        lines.append(json.dumps(rec))
        print(json.dumps(rec), file=sys.stderr, flush=True)
        _write(out, lines)
    if best_state is not None:
        net.load_state_dict(best_state)
    test_acc = accuracy(torch, net, test.x, test.y, norm) if test is not None else None
    lines.append(json.dumps({"test_acc": test_acc, "minutes": round(elapsed / 60, 4), "best_val_acc": best,
                             "epochs": epochs, "threads": args.threads, "torch": torch.__version__}))
    _write(out, lines)
    print(f"torch recipe: test acc {100 * (test_acc or 0):.2f}% after {epochs} epochs, "
          f"{elapsed / 60:.1f} min; {out}", file=sys.stderr)
    return 0


def _write(path: Path, lines: list[str]) -> None:
    from volnet.atomic import atomic_write_text

    atomic_write_text(path, "\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
