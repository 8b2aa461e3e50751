"""One plot of validation accuracy vs wall-clock minutes for the recipe run in volnet and in PyTorch
(``docs/recipe_curves.png``, BENCHMARKS.md "Training").

``python benchmarks/plot_recipe.py RUN_DIR TOTAL_WALL_S TORCH_JSONL [-o docs/recipe_curves.png]``

volnet's minute marks: the run's per-epoch ``seconds`` (training + validation) summed, plus everything
else the process did (start-up, data loading, checkpoints, the final test: ``TOTAL_WALL_S`` minus the
sum) counted before the first epoch, so each mark is at or after the real one. PyTorch's marks are the
wall clock since its process started (``benchmarks/torch_recipe.py``). The test accuracy of each (the
best-validation weights, tested once) is marked at its total time.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def volnet_curve(run: Path, total_s: float) -> tuple[list[float], list[float], float, float]:
    hist = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    offset = total_s - sum(h["seconds"] for h in hist)
    minutes, acc, t = [], [], offset
    for h in hist:
        t += h["seconds"]
        minutes.append(t / 60)
        acc.append(100 * h["val_acc"])
    test = json.loads((run / "results.json").read_text())["test_acc"]
    return minutes, acc, 100 * test, total_s / 60


def torch_curve(path: Path) -> tuple[list[float], list[float], float, float]:
    recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    ep = [r for r in recs if "epoch" in r]
    end = [r for r in recs if "test_acc" in r][-1]
    return [r["minutes"] for r in ep], [100 * r["val_acc"] for r in ep], 100 * end["test_acc"], end["minutes"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("total_s", type=float)
    ap.add_argument("torch_jsonl", type=Path)
    ap.add_argument("-o", "--out", default="docs/recipe_curves.png")
    args = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, (m, a, test, end), style in (("volnet", volnet_curve(args.run, args.total_s), "o-"),
                                           ("PyTorch 2.13", torch_curve(args.torch_jsonl), "s-")):
        line, = ax.plot(m, a, style, ms=3, label=f"{name}: validation")
        ax.plot([end], [test], "*", ms=12, color=line.get_color(),
                label=f"{name}: test {test:.2f}% at {end:.1f} min")
    ax.axhline(94.5, color="grey", ls=":", lw=1, label="94.5% (the goal)")
    ax.axvline(30, color="grey", ls="--", lw=1)
    ax.set_xlabel("wall-clock minutes on this 2-core machine")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(88, 96)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Fashion-MNIST, recipe fmnist-30min: volnet vs PyTorch")
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
