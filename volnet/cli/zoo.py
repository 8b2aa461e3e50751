"""``volnet zoo``: the model zoo, one line per model: name, parameters, default input size and paper."""

from __future__ import annotations

import argparse
import json

HELP = "list the model zoo (name, parameters, input size, paper)"

EXAMPLES = """examples:
  volnet zoo
  volnet zoo --json
  volnet summary resnet18 --depth 1        # then look at one of them
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the list as JSON")


def rows() -> list[dict[str, object]]:
    """One dict per zoo model at its default size and classes (nothing allocated)."""
    from volnet import zoo
    from volnet.spec import format_shape

    out = []
    for name in zoo.names():
        net = zoo.get(name, build=False)
        out.append({"name": name, "params": net.num_params(), "input": format_shape(tuple(net.input_shape)),
                    "paper": zoo.PAPERS.get(name, "")})
    return out


def run(args: argparse.Namespace) -> int:
    from volnet.summary import format_count

    table = rows()
    if args.json:
        print(json.dumps(table, indent=1))
        return 0
    cells = [[str(r["name"]), f"{r['params']:,} ({format_count(int(r['params']))})", str(r["input"]),
              str(r["paper"])] for r in table]
    head = ["name", "parameters", "input", "paper"]
    widths = [max(len(c[i]) for c in [head, *cells]) for i in range(3)]
    for c in [head, *cells]:
        print("  ".join(v.ljust(w) for v, w in zip(c[:3], widths)) + "  " + c[3])
    print("\nvolnet summary NAME for the layer table; --num-classes/--input choose a variant (train, export)")
    return 0
