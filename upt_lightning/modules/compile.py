"""``model.compile``: torch.compile the encoder, latent operator and decoder of a module, in place."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

PARTS = ("encoder", "operator", "decoder")


def compile_settings(setting: bool | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """torch.compile's keyword arguments for ``model.compile`` (None: do not compile).

    ``true`` compiles with ``dynamic=True``: the number of query points changes between training (sampled
    queries), validation and super-resolution, and one graph should serve them all. A mapping gives
    torch.compile's arguments itself, e.g. ``{backend: aot_eager}`` or ``{mode: max-autotune}``.
    """
    if setting is None or setting is False:
        return None
    if setting is True:
        return {"dynamic": True}
    if isinstance(setting, Mapping):
        unknown = sorted(set(setting) - {"backend", "mode", "dynamic", "fullgraph", "options"})
        if unknown:
            raise ValueError(f"model.compile has unknown keys {unknown}; torch.compile takes backend, mode, dynamic, "
                             "fullgraph and options")
        return {"dynamic": True, **dict(setting)}
    raise ValueError(f"model.compile={setting!r} must be true, false or a mapping of torch.compile arguments")


def compile_parts(module: nn.Module, setting: bool | Mapping[str, Any] | None) -> list[str]:
    """Compile ``module.encoder``, ``.operator`` and ``.decoder`` (those present) with ``nn.Module.compile``.

    In place: parameters, state_dict keys and checkpoints stay those of the eager module, so a compiled
    run resumes into an eager one and back. Returns the names of the compiled parts.
    """
    kwargs = compile_settings(setting)
    if kwargs is None:
        return []
    names = [name for name in PARTS if isinstance(getattr(module, name, None), nn.Module)]
    for name in names:
        getattr(module, name).compile(**kwargs)
    return names
