"""``volnet`` entry point.

Each subcommand lives in its own module ``volnet.cli.<name>`` providing
``HELP: str``, ``EXAMPLES: str``, ``add_arguments(parser)`` and ``run(args) -> int``.
User errors (any :class:`volnet.errors.VolnetError`, ``FileNotFoundError``) print one line to stderr and
exit with status 2; no traceback.

Shell completion (bash; zsh after ``autoload -U bashcompinit && bashcompinit``) comes from argcomplete,
the optional extra ``volnet[completion]``: ``eval "$(register-python-argcomplete volnet)"``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

COMMANDS = ["summary", "zoo", "train", "evaluate", "predict", "export", "import"]

EPILOG = """examples (from the notes):
  volnet summary "INPUT [32x32x3] -> CONV5-12 -> RELU -> POOL2 -> FC-10"
  volnet summary "INPUT [224x224x3] -> [CONV3-64 -> RELU]*3" --batch 10   # ~72MB per image
  volnet summary "INPUT [32x32x3] -> [[CONV3-32 -> RELU]*2 -> POOL2]*3 -> FC-10" --memory 512MB
  volnet summary vgg16 --batch 32
  volnet train --model default --data fashion-mnist --epochs 5 --out runs/fmnist
  volnet evaluate runs/fmnist/best --data fashion-mnist
  volnet zoo                                   # the model zoo: name, parameters, input size, paper
"""


def _load(name: str):
    return importlib.import_module(f"volnet.cli.{name}_cmd" if name == "import" else f"volnet.cli.{name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="volnet",
        description="ConvNets as in the cs231n notes: build, inspect, train, evaluate and exchange them.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from volnet import __version__

    parser.add_argument("--version", action="version", version=f"volnet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            mod = _load(name)
        except ModuleNotFoundError as e:  # a subcommand module not written yet
            if e.name and e.name.startswith("volnet.cli"):
                continue
            raise
        p = sub.add_parser(
            name,
            help=mod.HELP,
            description=mod.HELP,
            epilog=getattr(mod, "EXAMPLES", None),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    from volnet.errors import VolnetError

    parser = build_parser()
    if "_ARGCOMPLETE" in os.environ:  # the shell asks for completions (argcomplete's protocol)
        try:
            import argcomplete
        except ImportError:
            pass
        else:
            argcomplete.autocomplete(parser)
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except (VolnetError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError) as e:
        # one line, except a spec error which adds the spec with a caret under the bad token
        print(f"volnet {args.command}: error: {e or type(e).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"volnet {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
