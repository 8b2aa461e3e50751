"""The layer registry: the classes a model file may name, and layer <-> config dicts.

A model file (:mod:`volnet.io`) instantiates only classes registered here (the layers of
:data:`volnet.layers.LAYER_TYPES` and the containers of :mod:`volnet.net`, which register themselves), so
reading one never runs code.

>>> from volnet.layers import Conv
>>> d = layer_to_config(Conv(8, 3, pad=1))
>>> d["type"], layer_from_config(d).token()
('Conv', 'CONV3-8')
"""

from __future__ import annotations

from typing import Any

from volnet.errors import VolnetError
from volnet.layers import LAYER_TYPES, Layer

_TYPES: dict[str, type[Layer]] = dict(LAYER_TYPES)


def register(cls: type[Layer]) -> type[Layer]:
    """Allow model files to name ``cls`` (by its class name); usable as a class decorator."""
    _TYPES[cls.__name__] = cls
    return cls


def layer_types() -> dict[str, type[Layer]]:
    """Every class a model file may name: the layers and the containers (Sequential, Graph, Add, Concat)."""
    import volnet.net  # noqa: F401 - registers the containers and merge layers

    return dict(_TYPES)


def layer_to_config(layer: Layer) -> dict[str, Any]:
    """``{"type": class name, "config": layer.config()}`` (nested for containers)."""
    return {"type": type(layer).__name__, "config": layer.config()}


def short(v: Any, n: int = 60) -> str:
    """``repr(v)`` cut to ``n`` characters (for error messages about file contents)."""
    r = repr(v)
    return r if len(r) <= n else r[: n - 3] + "..."


def layer_from_config(d: Any, where: str = "net") -> Layer:
    """Rebuild a layer from :func:`layer_to_config`'s dict; only registered classes (no code runs).

    Raises VolnetError naming ``where`` (the position in the nested config) on unknown types or bad
    arguments.
    """
    if not isinstance(d, dict) or "type" not in d:
        raise VolnetError(f"{where}: expected an object with a \"type\" (layer class name), got {short(d)}")
    name = d["type"]
    types = layer_types()
    if not isinstance(name, str) or name not in types:
        raise VolnetError(f"{where}: unknown layer type {name!r}; known: {', '.join(sorted(types))}")
    cfg = d.get("config", {})
    if not isinstance(cfg, dict) or not all(isinstance(k, str) for k in cfg):
        raise VolnetError(
            f"{where}: \"config\" of {name} must be an object of keyword arguments, got {short(cfg)}"
        )
    try:
        return types[name].from_config(cfg, where=where)
    except VolnetError:
        raise
    except (TypeError, ValueError) as e:
        raise VolnetError(f"{where}: bad config for {name}: {e}") from None
