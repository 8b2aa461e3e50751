"""Training a ConvNet on images (the notes' "Training"): one package, one concept per module.

- :mod:`~volnet.train.config`: ``TrainConfig``, every setting of a run (defaults, checks, JSON);
- :mod:`~volnet.train.loop`: ``Trainer`` (``fit``: the notes' loop; ``resume``: bit-identical);
- :mod:`~volnet.train.callbacks`: ``Callback`` and the built-ins (checkpoints, metrics, progress,
  NaN guard, frozen BN statistics, best model, final test);
- :mod:`~volnet.train.checkpoint`: the run directory, checkpoint read/write, ``load_trained``;
- :mod:`~volnet.train.evaluate`: the one evaluation routine (loss, accuracy, confusion, predictions);
- :mod:`~volnet.train.model`: ``DEFAULT_MODEL``, ``adapt_spec``, ``default_model``;
- :mod:`~volnet.train.plots`: ``curves.png`` and ``confusion.png``.

The loop is the notes' recipe: normalise with statistics of the training split only, hold out a
validation split, shuffle every epoch, augment on the fly, minimise the softmax loss of the scores with a
parameter update (Adam, SGD + momentum, ...) whose learning rate follows a schedule (step decay, cosine,
linear warm-up), optionally clipping the gradient norm; keep the model with the best validation accuracy.
"""

from volnet.errors import ConfigError, TrainingError, TrainingInterrupted
from volnet.train.callbacks import HOOKS, Callback, Progress, StepLog
from volnet.train.checkpoint import (
    Checkpoint,
    TrainedModel,
    load_trained,
    read_checkpoint,
    read_metrics,
    read_trainer_json,
    write_checkpoint,
)
from volnet.train.config import TrainConfig
from volnet.train.evaluate import Evaluation, confusion_matrix, evaluate, format_confusion
from volnet.train.loop import Trainer
from volnet.train.model import DEFAULT_MODEL, adapt_spec, default_model
from volnet.train.plots import plot_confusion, plot_curves

__all__ = [
    "DEFAULT_MODEL", "HOOKS", "Callback", "Checkpoint", "ConfigError", "Evaluation", "Progress", "StepLog",
    "TrainConfig", "TrainedModel", "Trainer", "TrainingError", "TrainingInterrupted", "adapt_spec",
    "confusion_matrix", "default_model", "evaluate", "format_confusion", "load_trained", "plot_confusion",
    "plot_curves", "read_checkpoint", "read_metrics", "read_trainer_json", "write_checkpoint",
]
