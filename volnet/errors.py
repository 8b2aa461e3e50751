"""Errors volnet raises for bad user input.

Every error is a ``ValueError`` subclass whose message is one line: what is wrong and how to fix it.
The CLI prints that line (no traceback) and exits with status 2.
"""

from __future__ import annotations


class VolnetError(ValueError):
    """Base class of every user-facing volnet error."""


class ShapeError(VolnetError):
    """A layer does not fit its input: (W - F + 2P)/S + 1 is not a positive integer, or depths differ."""


class SpecError(VolnetError):
    """The architecture notation could not be parsed."""


class DataError(VolnetError):
    """A dataset is missing, corrupt or of the wrong shape."""


class ModelFileError(VolnetError):
    """A model or checkpoint file is missing, truncated, of the wrong version or has wrong arrays."""
