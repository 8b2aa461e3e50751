"""Errors volnet raises for bad user input.

Every error is a ``ValueError`` subclass whose message is one line: what is wrong and how to fix it.
The CLI prints that line (no traceback) and exits with status 2.
"""

from __future__ import annotations

from pathlib import Path


class VolnetError(ValueError):
    """Base class of every user-facing volnet error."""

    @property
    def line(self) -> str:
        """The one-line message (a spec error adds a caret display below it, which this leaves out)."""
        return str(self).split("\n", 1)[0]


class ShapeError(VolnetError):
    """A layer does not fit its input: (W - F + 2P)/S + 1 is not a positive integer, or depths differ.

    Raised inside a container it carries ``layer_path`` (the dotted name of the layer, e.g.
    ``block1.conv2``) and ``base_message`` (the layer's own message, without the path), so a caller can
    word its own message without editing this one's text.
    """

    layer_path: str | None = None
    base_message: str | None = None
    #: set by :func:`volnet.ops.sizes.output_size` when choosing ``fit`` (crop or pad) is one fix; ``detail``
    #: is then the message without that advice, so the notation can word it its own way
    fit_hint: bool = False
    detail: str | None = None

    def at(self, name: str) -> ShapeError:
        """This error raised again one container up: the path is prefixed by ``name``."""
        base = self.base_message if self.base_message is not None else str(self)
        full = name if self.layer_path is None else f"{name}.{self.layer_path}"
        err = ShapeError(f"layer {full}: {base}")
        err.layer_path, err.base_message = full, base
        return err


class SpecError(VolnetError):
    """The architecture notation could not be parsed."""


class DataError(VolnetError):
    """A dataset is missing, corrupt or of the wrong shape."""


class ModelFileError(VolnetError):
    """A model or checkpoint file is missing, truncated, of the wrong version or has wrong arrays."""


class ConfigError(VolnetError):
    """A training setting is out of range: carries ``field`` (the :class:`volnet.train.TrainConfig` name),
    ``value`` and ``expected`` (the rule), so a caller (the CLI) can name its own flag without editing the
    message text: ``ConfigError("batch_size", 0, "an integer >= 1").message_for("--batch")``."""

    def __init__(self, field: str, value: object, expected: str) -> None:
        self.field, self.value, self.expected = field, value, expected
        super().__init__(self.message_for(field))

    def message_for(self, name: str) -> str:
        """The message with the setting called ``name`` (e.g. the CLI flag)."""
        return f"{name} must be {self.expected}, got {self.value!r}"

    def with_name(self, name: str) -> ConfigError:
        """The same error worded for the setting called ``name`` (same ``field``, ``value``, ``expected``)."""
        err = ConfigError(self.field, self.value, self.expected)
        err.args = (self.message_for(name),)
        return err


class TrainingError(VolnetError):
    """Training cannot go on: the loss became NaN/inf, or a checkpoint does not fit the run."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (or ``KeyboardInterrupt``) during :meth:`volnet.train.Trainer.fit`, after the checkpoint was
    written.

    Attributes: ``checkpoint`` (the ``last/`` directory or None without ``out_dir``), ``epoch`` (0-based
    epoch in progress), ``batch`` (batches done in it), ``step`` (steps done in all).
    """

    def __init__(self, message: str, checkpoint: Path | None, epoch: int, batch: int, step: int) -> None:
        super().__init__(message)
        self.checkpoint, self.epoch, self.batch, self.step = checkpoint, epoch, batch, step

    def __str__(self) -> str:
        return str(self.args[0])
