"""Conversions between the two ways fields travel through the library.

Data loaders and metrics use one tensor with all channels, ``(B, N, C)``; the models and the
seed's loss API use a mapping ``{field_name: (B, N, C_f)}``. A *field spec* is an ordered
mapping ``{field_name: C_f}`` (for example ``{"u": 1, "v": 1}``) that fixes the channel order.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

FieldSpec = Mapping[str, int]


def validate_field_spec(spec: FieldSpec) -> dict[str, int]:
    """Return ``spec`` as a plain dict after checking names and channel counts."""
    if not spec:
        raise ValueError("field spec is empty: give at least one field, e.g. {'u': 1}")
    out = {}
    for name, channels in spec.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"field names must be non-empty strings, got {name!r}")
        if int(channels) <= 0:
            raise ValueError(f"field {name!r} has {channels} channels; each field needs at least 1")
        out[name] = int(channels)
    return out


def total_channels(spec: FieldSpec) -> int:
    """Number of channels of all fields together."""
    return sum(int(c) for c in spec.values())


def channel_names(spec: FieldSpec) -> list[str]:
    """One name per channel, as metrics label them: ``{"u": 1, "w": 2}`` gives ``["u", "w0", "w1"]``."""
    return [f"{name}{i}" if int(count) > 1 else name for name, count in spec.items() for i in range(int(count))]


def split_fields(tensor: torch.Tensor, spec: FieldSpec) -> dict[str, torch.Tensor]:
    """Split ``(..., C)`` into ``{name: (..., C_f)}`` following the order of ``spec``."""
    expected = total_channels(spec)
    if tensor.shape[-1] != expected:
        raise ValueError(
            f"tensor has {tensor.shape[-1]} channels in its last axis but the field spec "
            f"{dict(spec)} needs {expected}"
        )
    parts = torch.split(tensor, [int(c) for c in spec.values()], dim=-1)
    return dict(zip(spec.keys(), parts))


def cat_fields(fields: Mapping[str, torch.Tensor] | torch.Tensor, spec: FieldSpec) -> torch.Tensor:
    """Concatenate ``{name: (..., C_f)}`` into ``(..., C)`` in the order of ``spec``.

    A tensor is passed through after its channel count is checked, so callers may hand either form.
    """
    if isinstance(fields, torch.Tensor):
        if fields.shape[-1] != total_channels(spec):
            raise ValueError(
                f"tensor has {fields.shape[-1]} channels but the field spec {dict(spec)} "
                f"needs {total_channels(spec)}"
            )
        return fields
    missing = [name for name in spec if name not in fields]
    if missing:
        raise KeyError(f"fields {missing} missing; got {sorted(fields)}, expected {list(spec)}")
    for name, channels in spec.items():
        if fields[name].shape[-1] != int(channels):
            raise ValueError(
                f"field {name!r} has {fields[name].shape[-1]} channels, the spec says {channels}"
            )
    return torch.cat([fields[name] for name in spec], dim=-1)
