"""What a MODEL argument names: one resolver for every subcommand (``summary``, ``export``, ``train``).

In this order: ``default`` (where the command allows it), a directory (a saved model or a training run),
a file holding a spec (``#`` starts a comment), a zoo name (:func:`volnet.zoo.lookup`:
case, ``-`` and ``_`` ignored), otherwise a spec in the notes' notation.

>>> resolve_model_arg("resnet-18").kind, resolve_model_arg("ResNet-18").text
('zoo', 'resnet18')
>>> resolve_model_arg("INPUT [8x8x1] -> FC-10").kind
'spec'
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from volnet.errors import SpecError, VolnetError

_WORD = re.compile(r"[A-Za-z][\w.-]*")


@dataclass(frozen=True)
class ModelArg:
    """``kind``: ``"default"``, ``"dir"``, ``"file"``, ``"zoo"`` or ``"spec"``; ``arg``: as given; ``text``:
    the spec (the file's contents or the argument), the canonical zoo name, or the directory's path."""

    kind: str
    arg: str
    text: str


def exists(path: str, test: Any) -> bool:
    """``test(path)`` (``os.path.isdir``/``isfile``), False for names the file system cannot hold."""
    try:
        return bool(test(path))
    except (OSError, ValueError):  # names too long for the file system, NUL bytes
        return False


def zoo_key(arg: str) -> str | None:
    """The canonical zoo name of ``arg``, or None when it is not one."""
    if not _WORD.fullmatch(arg.strip()):
        return None
    from volnet import zoo

    try:
        return zoo.lookup(arg)
    except VolnetError:
        return None


def read_spec_file(path: str) -> str:
    """The spec in the file ``path``, as it is (a regular UTF-8 file of bounded size): ``#`` comments
    (a line of their own or after a layer) are the notation's, so a spec error's line is the file's own."""
    from volnet.validate import read_text

    return read_text(path, "spec file", SpecError)


def resolve_model_arg(arg: str, allow_default: bool = False) -> ModelArg:
    """What ``arg`` names (see the module docstring for the order)."""
    if allow_default and arg.strip().lower() == "default":
        from volnet.train import DEFAULT_MODEL

        return ModelArg("default", arg, DEFAULT_MODEL)
    from volnet.validate import refuse_special

    refuse_special(arg, "model or spec file", VolnetError)  # a FIFO or device would block
    if exists(arg, os.path.isdir):
        return ModelArg("dir", arg, arg)
    if exists(arg, os.path.isfile):
        return ModelArg("file", arg, read_spec_file(arg))
    key = zoo_key(arg)
    if key is not None:
        return ModelArg("zoo", arg, key)
    return ModelArg("spec", arg, arg)


def not_a_zoo_name(arg: str) -> str | None:
    """For a bare word that is not a zoo name (a mistyped one, most likely), the zoo's one-line error with
    its did-you-mean; None for anything else. Callers add it to a spec error of ``arg``."""
    if not _WORD.fullmatch(arg.strip()) or re.search(r"-\d", arg):  # FC-10, CONV3-8: notation
        return None
    from volnet import zoo

    try:
        zoo.lookup(arg)
    except VolnetError as e:
        return str(e)
    return None
