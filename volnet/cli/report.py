"""``volnet report RUN_DIR``: one self-contained ``report.html`` of a training run (images inlined, no
network): the net, the curves, the confusion matrix with per-class recall, the most confident mistakes,
the first-layer filters, the settings, timing and machine (needs matplotlib: ``volnet[viz]``)."""

from __future__ import annotations

import argparse
import sys

HELP = "write report.html of a training run: curves, confusion matrix, mistakes, filters, settings"

EXAMPLES = """examples:
  volnet report runs/default                     # writes runs/default/report.html
  volnet report runs/default -o /tmp/fmnist.html
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN_DIR", help="a training run directory (metrics.jsonl, best/, last/)")
    p.add_argument("-o", "--out", metavar="HTML", help="where to write it (default RUN_DIR/report.html)")


def run(args: argparse.Namespace) -> int:
    from volnet.cli.show import need_viz
    from volnet.report import write_report

    need_viz("volnet report")
    out = write_report(args.run, args.out)
    print(f"wrote {out}", file=sys.stderr)
    return 0
