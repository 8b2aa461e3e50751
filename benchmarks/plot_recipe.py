"""One plot of accuracy vs minutes for volnet's recipe run and its PyTorch replica: docs/recipe_curves.png.

volnet: the run directory's ``metrics.jsonl`` (per epoch ``seconds``: training + validation, summed to
minutes; ``val_acc``) and ``results.json`` (``test_acc`` after the run). PyTorch: the JSON lines of
``benchmarks/torch_recipe.py`` (per epoch ``minutes``, ``val_acc``; last line ``test_acc``). Validation
accuracy per epoch as lines, the final test accuracy as a marker at the run's end.

    python benchmarks/plot_recipe.py --volnet runs/fmnist-30min --torch runs/torch-recipe.jsonl \\
        --out docs/recipe_curves.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def volnet_curve(run: Path) -> tuple[list[float], list[float], float | None]:
    """(minutes, val_acc per epoch, test_acc or None) of a volnet run directory."""
    from volnet.train import read_metrics

    recs = [r for r in read_metrics(run) if r.get("val_acc") is not None]
    minutes, t = [], 0.0
    for r in recs:
        t += float(r["seconds"]) / 60
        minutes.append(t)
    res = run / "results.json"
    test = json.loads(res.read_text()).get("test_acc") if res.is_file() else None
    return minutes, [float(r["val_acc"]) for r in recs], test


def torch_curve(path: Path) -> tuple[list[float], list[float], float | None]:
    """(minutes, val_acc per epoch, test_acc or None) of a torch_recipe.py JSON lines file."""
    recs: list[dict[str, Any]] = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    ep = [r for r in recs if "epoch" in r]
    test = next((r["test_acc"] for r in recs if "test_acc" in r), None)
    return [float(r["minutes"]) for r in ep], [float(r["val_acc"]) for r in ep], test


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--volnet", required=True, help="volnet run directory (metrics.jsonl, results.json)")
    p.add_argument("--torch", required=True, help="JSON lines of benchmarks/torch_recipe.py")
    p.add_argument("--out", default="docs/recipe_curves.png")
    args = p.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from volnet.atomic import open_atomic

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, (m, v, test), color in (("volnet", volnet_curve(Path(args.volnet)), "tab:blue"),
                                      ("PyTorch", torch_curve(Path(args.torch)), "tab:orange")):
        ax.plot(m, [100 * a for a in v], "-o", ms=3, color=color, label=f"{name} validation")
        if test is not None and m:
            ax.plot([m[-1]], [100 * test], "*", ms=12, color=color,
                    label=f"{name} test {100 * test:.2f}% ({m[-1]:.1f} min)")
    ax.axhline(94.5, color="gray", ls=":", lw=1, label="94.5% goal")
    ax.set_xlabel("minutes (training + validation)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(88, 96)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Fashion-MNIST, recipe fmnist-30min, 2 cores")
    fig.tight_layout()
    with open_atomic(args.out) as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
