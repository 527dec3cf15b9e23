"""Settings objects that a module receives whole: built by Hydra's ``instantiate`` from a config group
(``_target_``), by LightningCLI from a mapping, or directly in Python.

A module's constructor takes the object or a plain mapping of its arguments, and stores the mapping among its
hyperparameters, so a checkpoint rebuilds the object with ``weights_only`` loading (no pickled classes).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def settings_of(cls: type[T], value: T | Mapping[str, Any] | None, group: str) -> T:
    """``value`` as a ``cls``: itself, ``cls(**value)`` for a mapping (an unknown key is a ValueError naming
    ``group.key`` and the known ones), ``cls()`` for None."""
    if isinstance(value, cls):
        return value
    if value is None:
        return cls()
    if not isinstance(value, Mapping):
        raise TypeError(f"{group} must be a {cls.__name__} or a mapping of its arguments, got {type(value).__name__}")
    given = {key: item for key, item in value.items() if key != "_target_"}
    check_known_keys(cls, given, group)
    return cls(**given)


def check_known_keys(cls: type, keys, group: str) -> None:
    """ValueError naming the first of ``keys`` that ``cls`` takes no argument of, and the ones it takes."""
    parameters = inspect.signature(cls).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return  # a class of the user's that takes any keyword checks its own
    known = [name for name in parameters if name != "self"]
    unknown = sorted(set(keys) - set(known))
    if unknown:
        raise ValueError(f"{group}.{unknown[0]} is not a setting of {cls.__name__}; its settings are "
                         f"{[f'{group}.{name}' for name in known]}")
