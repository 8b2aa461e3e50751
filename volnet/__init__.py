"""volnet: ConvNets as in the cs231n notes, in NumPy."""

from volnet.errors import DataError, ModelFileError, ShapeError, SpecError, VolnetError

__version__ = "0.1.0"

__all__ = ["DataError", "ModelFileError", "ShapeError", "SpecError", "VolnetError", "__version__"]
