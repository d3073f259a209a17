"""jaxqa: extractive question answering with compact BERT-family encoders in JAX.

The public names load on first use, so that the `jaxqa` command's help and the
SQuAD tools of `jaxqa.squad` start without importing JAX."""

import importlib
import sys
import types
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jaxqa.checkpoint import save_pretrained
    from jaxqa.errors import Error
    from jaxqa.pipeline import pipeline
    from jaxqa.pretrained import Pretrained, load_pretrained, open_model

# Each public name and the module that defines it.
_HOMES = {
    "Error": "jaxqa.errors",
    "Pretrained": "jaxqa.pretrained",
    "load_pretrained": "jaxqa.pretrained",
    "open_model": "jaxqa.pretrained",
    "pipeline": "jaxqa.pipeline",
    "save_pretrained": "jaxqa.checkpoint",
}
__all__ = ["Error", "Pretrained", "load_pretrained", "open_model", "pipeline", "save_pretrained"]


def __getattr__(name: str):
    """A public name from its module; any other a submodule (`jaxqa.models`), as
    an import of the whole package once made them."""
    if name in _HOMES:
        value = getattr(importlib.import_module(_HOMES[name]), name)
        globals()[name] = value
        return value
    if not name.startswith("_"):
        try:
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{name}":
                raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value) -> None:
        # Importing the submodule jaxqa.pipeline binds it here, as Python binds
        # every submodule to its package: `jaxqa.pipeline` stays the function.
        if name in _HOMES and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
