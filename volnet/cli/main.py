"""``volnet`` entry point.

Each subcommand lives in its own module ``volnet.cli.<name>`` providing
``HELP: str``, ``EXAMPLES: str``, ``add_arguments(parser)`` and ``run(args) -> int``.
User errors print one line to stderr and exit with status 2, no traceback: any
:class:`volnet.errors.VolnetError` (a spec error adds the spec with a caret under the bad token), bad
arguments, and operating-system errors (missing file, permission denied, disk full, read-only file
system, ...), each with the path. ``MemoryError`` and ``RecursionError`` get one line too. Anything else is
a bug in volnet: one line saying so and "please report this", exit status 1; ``--debug`` (or
``VOLNET_DEBUG=1``) shows the traceback instead.

Shell completion (bash; zsh after ``autoload -U bashcompinit && bashcompinit``) comes from argcomplete,
the optional extra ``volnet[completion]``: ``eval "$(register-python-argcomplete volnet)"``.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys

COMMANDS = ["summary", "zoo", "train", "evaluate", "predict", "show", "report", "export", "import"]

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


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (``volnet train: error: ...; see volnet train --help``)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}; see {self.prog} --help\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="volnet",
        description="ConvNets as in the cs231n notes: build, inspect, train, evaluate and exchange them.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from volnet import __version__

    parser.add_argument("--version", action="version", version=f"volnet {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show Python tracebacks of internal errors (also VOLNET_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
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


_OS_HINTS = {
    errno.ENOSPC: "the disk is full; free some space or write somewhere else",
    errno.EDQUOT: "disk quota exceeded; free some space or write somewhere else",
    errno.EROFS: "the file system is read-only; write somewhere else",
    errno.EACCES: "check the permissions or choose another path",
    errno.EPERM: "check the permissions or choose another path",
    errno.ENOENT: "check the path",
    errno.ENOTDIR: "a part of the path is a file, not a directory",
    errno.EISDIR: "give a file, not a directory",
    errno.EEXIST: "choose another path",
    errno.EBUSY: "the path is in use; try again or choose another path",
    errno.ENAMETOOLONG: "use a shorter path",
    errno.ELOOP: "the path has a symbolic link loop",
    errno.EMFILE: "too many open files; close some programs",
    errno.EIO: "input/output error: the disk or the file may be damaged",
    errno.EFBIG: "the file is larger than this system allows (ulimit -f); free space or raise the limit",
}


def os_error_line(e: OSError) -> str:
    """One line for an OSError: what failed, on which path, and what to do."""
    what = e.strerror or str(e) or type(e).__name__
    paths = [str(p) for p in (e.filename, e.filename2) if p is not None]
    where = f": {' -> '.join(paths)}" if paths else ""
    hint = _OS_HINTS.get(e.errno or -1)
    return f"{what}{where}" + (f" ({hint})" if hint else "")


def error_line(e: BaseException) -> tuple[str, bool]:
    """(the message for ``e``, whether it is a user error); the message of a VolnetError may add a caret
    display below its first line, every other message is one line."""
    from volnet.errors import VolnetError

    if isinstance(e, VolnetError):
        return str(e) or type(e).__name__, True
    if isinstance(e, OSError):
        return os_error_line(e), True
    if isinstance(e, MemoryError):
        return ("not enough memory for this (the model, data or batch is too large for this machine); "
                "use a smaller batch or model"), True
    if isinstance(e, RecursionError):
        return "the input is nested too deeply to process; simplify it", True
    if isinstance(e, UnicodeDecodeError):
        return f"a file is not UTF-8 text ({e.reason} at byte {e.start}); give a text file", True
    first = (str(e).strip().splitlines() or [""])[0][:200]
    return (f"internal error ({type(e).__name__}{': ' + first if first else ''}); this is a bug in volnet, "
            "please report this with the command you ran (--debug shows the traceback)"), False


#: Largest magnitude of an integer option (``--epochs``, ``--batch``, ...): beyond it nothing finishes.
MAX_INT_OPTION = 2**31 - 1


#: Ranges of the numeric options, by name, for every command that has them (commands check the rest).
RANGES: dict[str, tuple[float, str]] = {
    "epochs": (0, ">="), "batch": (1, ">="), "lr": (0, ">"), "warmup": (0, ">="), "step_size": (0, ">"),
    "gamma": (0, ">"), "min_lr": (0, ">="), "weight_decay": (0, ">="), "momentum": (0, ">="),
    "clip": (0, ">"), "seed": (0, ">="), "save_every": (1, ">="), "limit_train": (1, ">="),
    "num_classes": (2, ">="), "top": (1, ">="), "limit": (0, ">="), "opset": (1, ">="), "workers": (1, ">="),
}
#: String options holding a number (``--val 0.1`` or ``--val 5000``).
NUMERIC_TEXT = ("val",)


def check_numbers(args: argparse.Namespace) -> str | None:
    """The first numeric option out of range (NaN, infinite, an integer beyond ``MAX_INT_OPTION``, or
    outside :data:`RANGES`), as a message; None when all are usable."""
    import math

    for key, v in vars(args).items():
        if key.startswith("_") or isinstance(v, bool):
            continue
        name = "--" + key.replace("_", "-")
        if key in NUMERIC_TEXT and isinstance(v, str):
            try:
                number = float(v)
            except ValueError:
                return f"{name} must be a number (a count or a fraction), got {v[:40]!r}"
            if not math.isfinite(number) or number < 0:
                return f"{name} must be a count >= 1 or a fraction in [0, 1), got {v[:40]}"
            continue
        if key in RANGES and isinstance(v, (int, float)) and math.isfinite(v):
            lo, op = RANGES[key]
            if not (v > lo if op == ">" else v >= lo):
                return f"{name} must be {op} {lo:g}, got {v:g}"
        if isinstance(v, float) and not math.isfinite(v):
            return f"{name} must be a finite number, got {v}"
        if isinstance(v, int) and abs(v) > MAX_INT_OPTION:
            text = str(v)
            shown = text if len(text) <= 12 else text[:12] + "..."
            return f"{name} {shown} is too large (at most {MAX_INT_OPTION:,})"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    if "_ARGCOMPLETE" in os.environ:  # the shell asks for completions (argcomplete's protocol)
        try:
            import argcomplete
        except ImportError:
            pass
        else:
            argcomplete.autocomplete(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: --help (0) or a bad argument (2, one line printed)
        return e.code if isinstance(e.code, int) else 2
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    args._argv = list(sys.argv[1:] if argv is None else argv)  # for commands that relaunch themselves
    bad = check_numbers(args)
    if bad:
        print(f"volnet {args.command}: error: {bad}; see volnet {args.command} --help", file=sys.stderr)
        return 2
    debug = bool(args.debug) or os.environ.get("VOLNET_DEBUG", "") not in ("", "0")
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print(f"volnet {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        msg, user = error_line(e)
        if debug and not user:
            raise
        print(f"volnet {args.command}: error: {msg}", file=sys.stderr)
        return 2 if user else 1


if __name__ == "__main__":
    sys.exit(main())
