"""volnet: ConvNets as in the cs231n notes, in NumPy.

>>> import volnet
>>> net = volnet.build("INPUT [32x32x3] -> [CONV3-8 -> RELU]*2 -> POOL2 -> FC-10")
>>> print(volnet.summary(net).totals["params"])
21298
"""

from volnet import viz  # (filters, activations, occlusion, saliency)
from volnet.convert import convert_fc_to_conv
from volnet.errors import DataError, ModelFileError, ShapeError, SpecError, VolnetError
from volnet.io import load, save
from volnet.layers import (
    FC,
    LRN,
    BatchNorm,
    Conv,
    Dropout,
    Flatten,
    GlobalAvgPool,
    Layer,
    Local,
    Pool,
    ReLU,
    Softmax,
)
from volnet.net import Add, Concat, Graph, Sequential
from volnet.ops.sizes import output_size
from volnet.report import write_report
from volnet.spec import build
from volnet.summary import Summary, summary
from volnet.train import (
    DEFAULT_MODEL,
    Callback,
    TrainConfig,
    Trainer,
    TrainingError,
    default_model,
    load_trained,
)

__version__ = "0.1.0"

__all__ = [
    "FC", "LRN", "Add", "BatchNorm", "Concat", "Conv", "DataError", "Dropout", "Flatten", "GlobalAvgPool",
    "Graph", "Layer", "Local", "ModelFileError", "Pool", "ReLU", "Sequential", "ShapeError", "Softmax",
    "SpecError", "Summary", "VolnetError", "__version__", "build", "convert_fc_to_conv", "load",
    "output_size", "save", "summary", "DEFAULT_MODEL", "Callback", "TrainConfig", "Trainer", "TrainingError",
    "default_model", "load_trained", "viz", "write_report",
]
