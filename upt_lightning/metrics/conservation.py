"""Conservation diagnostics: the domain integrals a PDE conserves or dissipates, on predicted and true rollouts.

A data set declares its quantities by name, each a kind over some of its fields (``data.conservation``
in the config, e.g. ``{mean_u: {kind: mean, fields: [u]}, energy: {kind: energy, fields: [u, v]}}``):

* ``mean``: the domain mean of one channel (periodic Burgers conserves the mean velocity; 2D
  Navier-Stokes keeps the mean vorticity at zero);
* ``energy``: ``0.5 * mean(sum_c u_c^2)`` over the given velocity channels (must not grow without forcing);
* ``enstrophy``: ``0.5 * mean(w^2)`` of a vorticity channel (must not grow without forcing).

Means are over the points: exact integrals over the unit domain on a uniform grid, Monte-Carlo estimates
on scattered points (masked points excluded). The drift of a quantity at step k is
``|Q(pred_k) - Q(true_k)| / scale_k``: for energy and enstrophy ``scale = Q(true_k)``, for a mean the
RMS of the true channel at that step, since a conserved mean may be zero.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import torch
from torchmetrics import Metric

KINDS = ("mean", "energy", "enstrophy")


def resolve_quantities(spec: Mapping | None, channel_names: Sequence[str]) -> dict[str, tuple[str, list[int]]]:
    """``{name: (kind, channel indices)}`` of a declaration ``{name: {kind, fields}}``; ValueError naming the
    quantity for an unknown kind or field, or a mean or enstrophy over more than one channel."""
    out: dict[str, tuple[str, list[int]]] = {}
    for name, entry in (spec or {}).items():
        if not isinstance(entry, Mapping) or "kind" not in entry or "fields" not in entry:
            raise ValueError(f"conservation quantity {name!r} must be {{kind: ..., fields: [...]}}, got {entry!r}")
        kind, fields = entry["kind"], entry["fields"]
        fields = [fields] if isinstance(fields, str) else list(fields)
        if kind not in KINDS:
            raise ValueError(f"conservation quantity {name!r} has kind {kind!r}; choose one of {list(KINDS)}")
        unknown = [f for f in fields if f not in channel_names]
        if unknown or not fields:
            raise ValueError(f"conservation quantity {name!r} names fields {unknown or fields}, but the data's "
                             f"channels are {list(channel_names)}")
        if kind in ("mean", "enstrophy") and len(fields) != 1:
            raise ValueError(f"conservation quantity {name!r} ({kind}) takes one field, got {fields}")
        out[str(name)] = (kind, [list(channel_names).index(f) for f in fields])
    return out


def domain_integrals(fields: torch.Tensor, quantities: Mapping[str, tuple[str, list[int]]],
                     mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """``{name: (...)}``: each quantity of ``fields`` ``(..., N, C)`` (``mask`` ``(B, N)``, True = real point,
    broadcast over the axes between B and N)."""
    values = fields.double()
    if mask is None:
        weights = torch.full(values.shape[:-1], 1.0 / values.shape[-2], dtype=values.dtype, device=values.device)
    else:
        m = mask.to(values.dtype).reshape(mask.shape[0], *([1] * (values.ndim - 3)), mask.shape[1])
        weights = (m / m.sum(-1, keepdim=True).clamp_min(1)).expand(values.shape[:-1])
    out = {}
    for name, (kind, channels) in quantities.items():
        picked = values[..., channels]
        density = picked[..., 0] if kind == "mean" else 0.5 * picked.square().sum(-1)
        out[name] = (density * weights).sum(-1)
    return out


def quantity_scale(target: torch.Tensor, kind: str, channels: list[int], value: torch.Tensor,
                   mask: torch.Tensor | None = None) -> torch.Tensor:
    """The drift's denominator: ``value`` (the true integral) for energy and enstrophy, the RMS of the true
    channel for a mean."""
    if kind != "mean":
        return value.abs()
    rms = domain_integrals(target, {"s": ("energy", channels)}, mask)["s"]  # 0.5 * mean(u^2)
    return (2 * rms).sqrt()


class ConservationDrift(Metric):
    """Mean drift of each declared quantity at every rollout step, over all rollouts seen.

    ``update(pred, target, mask)`` with raw rollouts ``(B, K, N, C)``; ``compute()`` gives ``{name: (K,)}``.
    """

    full_state_update = False

    def __init__(self, quantities: Mapping[str, tuple[str, list[int]]], horizon: int, **kwargs):
        super().__init__(**kwargs)
        if not quantities:
            raise ValueError("ConservationDrift needs at least one quantity")
        self.quantities = dict(quantities)
        self.horizon = int(horizon)
        self.add_state("drift", default=torch.zeros(len(self.quantities), self.horizon, dtype=torch.float64),
                       dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        if pred.shape != target.shape or pred.ndim != 4 or pred.shape[1] != self.horizon:
            raise ValueError(f"pred and target must be (B, {self.horizon}, N, C) rollouts, got "
                             f"{tuple(pred.shape)} and {tuple(target.shape)}")
        predicted, true = domain_integrals(pred, self.quantities, mask), domain_integrals(target, self.quantities, mask)
        rows = []
        for name, (kind, channels) in self.quantities.items():
            scale = quantity_scale(target, kind, channels, true[name], mask).clamp_min(1e-12)
            rows.append(((predicted[name] - true[name]).abs() / scale).sum(0))  # (K,)
        self.drift += torch.stack(rows)
        self.count += pred.shape[0]

    def compute(self) -> dict[str, torch.Tensor]:
        mean = self.drift / self.count.clamp_min(1)
        return {name: mean[i] for i, name in enumerate(self.quantities)}

    def _wrap_compute(self, compute):
        # torchmetrics squeezes one-element results to 0-dim; horizon 1 must still give (1,).
        wrapped = super()._wrap_compute(compute)

        @functools.wraps(compute)
        def keep_step_axis(*args, **kwargs):
            return {key: value.reshape(self.horizon) for key, value in wrapped(*args, **kwargs).items()}

        return keep_step_axis
