"""Imports that a library makes "in case", bound to a stand-in that imports on first use.

timm imports W&B (about 0.5 s) for its own training scripts' logging, so every run would pay
for it before its first step even when it logs to CSV only::

    with deferred("wandb"):
        import timm  # timm's ``import wandb`` binds a stand-in; W&B is not imported

The stand-in imports the real module the first time one of its attributes is used and hands
everything on to it. It sits in ``sys.modules`` only inside the ``with`` block: afterwards
``import wandb`` anywhere is an ordinary import of the real module, which is the one the
stand-in forwards to (so both names reach the same library state).

A submodule can be deferred too: torchmetrics imports ``scipy.signal`` (0.7-1 s) for its audio
metrics, which an image classifier never computes::

    with deferred("scipy.signal", attributes={"hamming": forwarding("scipy.signal.windows", "hamming")}):
        import lightning

(importlib's ``LazyLoader`` does not fit: the ``import`` statement reads the module's
``__spec__``, which runs a lazy module at once, and a lazy package run by a submodule import
has that submodule loaded twice.)
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager


class _StandIn(types.ModuleType):
    """Forwards every attribute to the real module ``__name__``, importing it on first use."""

    def __getattr__(self, attr: str):  # only for names the stand-in itself does not hold
        return getattr(_real(self), attr)

    def __setattr__(self, attr: str, value) -> None:
        setattr(_real(self), attr, value)

    def __delattr__(self, attr: str) -> None:
        delattr(_real(self), attr)

    def __dir__(self) -> list[str]:
        return dir(_real(self))


def _real(stand_in: _StandIn) -> types.ModuleType:
    name = stand_in.__name__
    if sys.modules.get(name) is stand_in:  # used inside the ``with`` block: import it now
        del sys.modules[name]
    return importlib.import_module(name)


@contextmanager
def deferred(name: str, attributes: Mapping[str, object] | None = None) -> Iterator[None]:
    """Inside the block, ``import name`` binds a stand-in that imports ``name`` on first use.

    Nothing changes when ``name`` is imported already or not installed. ``name`` may be a
    submodule (``scipy.signal``): its parent package is imported, and inside the block the
    parent's attribute is the stand-in too. A submodule of ``name`` imported inside the block
    would be loaded twice (the real package's code imports it too), so the block should hold
    the imports of the library that binds ``name`` and nothing that uses it.

    ``attributes``: names the stand-in holds itself, so that a library that only checks them
    (torchmetrics' ``hasattr(scipy.signal, "hamming")`` before it patches the name in) does
    not import the module; every other attribute is the real module's.
    """
    try:  # (for a submodule this imports its parent package, which may import it as well)
        missing = name not in sys.modules and importlib.util.find_spec(name) is None
    except ModuleNotFoundError:  # the parent package is missing
        missing = True
    if missing or name in sys.modules:
        yield
        return
    parent_name, _, child = name.rpartition(".")
    parent = sys.modules[parent_name] if parent_name else None  # find_spec imported it
    stand_in = _StandIn(name, f"stand-in for {name}, imported on first use")
    # what ``import`` reads of a module in sys.modules: no attribute lookup reaches the real one
    object.__setattr__(stand_in, "__spec__", None)
    object.__setattr__(stand_in, "__file__", None)
    for attr, value in (attributes or {}).items():
        object.__setattr__(stand_in, attr, value)
    sys.modules[name] = stand_in
    if parent is not None:
        setattr(parent, child, stand_in)
    try:
        yield
    finally:
        if sys.modules.get(name) is stand_in:
            del sys.modules[name]
        if parent is not None and parent.__dict__.get(child) is stand_in:
            delattr(parent, child)  # as before the block: set by the real module's import


def forwarding(module: str, attr: str) -> Callable:
    """A function that calls ``module.attr``, importing ``module`` at its first call."""

    def call(*args, **kwargs):
        return getattr(importlib.import_module(module), attr)(*args, **kwargs)

    call.__name__ = call.__qualname__ = attr
    call.__doc__ = f"{module}.{attr}, imported at the first call."
    return call


def imported(name: str) -> bool:
    """Whether the real module ``name`` is imported in this process (not only a stand-in)."""
    module = sys.modules.get(name)
    return module is not None and not isinstance(module, _StandIn)
