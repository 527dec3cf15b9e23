"""Input checks shared by the models, so bad input fails early with a message that says the fix."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token

import torch

# Names check_finite lets through (see allow_nonfinite).
_ALLOWED_NONFINITE: ContextVar[frozenset[str]] = ContextVar("allowed_nonfinite", default=frozenset())


class DeferredFiniteChecks:
    """NaN/Inf counts of checked tensors, kept on their device: no host sync until :meth:`raise_if_any`.

    After :func:`defer_finite_checks` :func:`check_finite` adds each tensor's count of non-finite
    entries here instead of reading it on the host (which waits for the device to finish, once per
    forward); :meth:`raise_if_any` reads every count with one sync and raises the error the immediate
    check would have raised, with the counts summed over the calls since the last check.
    """

    def __init__(self) -> None:
        self.counts: dict[str, torch.Tensor] = {}

    def record(self, name: str, tensor: torch.Tensor) -> None:
        bad = (~torch.isfinite(tensor.detach())).sum()
        self.counts[name] = self.counts[name] + bad if name in self.counts else bad

    def raise_if_any(self) -> None:
        """Raise ValueError (as ``check_finite``) for the first name with non-finite entries; then forget them."""
        counts, self.counts = self.counts, {}
        if not counts:
            return
        totals = torch.stack(list(counts.values())).tolist()  # the one host sync
        for name, bad in zip(counts, totals):
            if bad:
                raise ValueError(_nonfinite_message(name, int(bad)))


_DEFERRED: ContextVar[DeferredFiniteChecks | None] = ContextVar("deferred_finite_checks", default=None)


def defer_finite_checks(checks: DeferredFiniteChecks) -> Token:
    """From now on (in this context) ``check_finite`` records into ``checks`` instead of reading the device;
    :func:`stop_deferring` with the returned token makes the checks immediate again."""
    return _DEFERRED.set(checks)


def stop_deferring(token: Token) -> None:
    _DEFERRED.reset(token)


def _nonfinite_message(name: str, bad: int) -> str:
    return (f"{name} contains {bad} NaN or infinite values; clean or re-normalise the input data "
            "(padding entries are allowed only where meta['mask'] is False)")


def check_points_tensor(
    name: str,
    tensor: torch.Tensor,
    channels: int,
    batch: int | None = None,
    count: int | None = None,
) -> None:
    """Check that ``tensor`` is ``(B, N, channels)`` with the given ``B`` and ``N`` when those are set."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, N, {channels}), got {type(tensor).__name__}")
    expected = f"({batch if batch is not None else 'B'}, {count if count is not None else 'N'}, {channels})"
    if (
        tensor.ndim != 3
        or tensor.shape[2] != channels
        or (batch is not None and tensor.shape[0] != batch)
        or (count is not None and tensor.shape[1] != count)
    ):
        raise ValueError(f"{name} must have shape {expected}, got {tuple(tensor.shape)}")


@contextmanager
def allow_nonfinite(*names: str) -> Iterator[None]:
    """Within the block ``check_finite`` accepts the tensors ``names``.

    For model outputs fed back into a model, such as the decoded fields the cycle loss re-encodes: their
    NaN/Inf means a diverged model, which the training step's ``nan_policy`` reports with the loss terms,
    not bad input data (and the check's host sync is saved).
    """
    token = _ALLOWED_NONFINITE.set(_ALLOWED_NONFINITE.get() | frozenset(names))
    try:
        yield
    finally:
        _ALLOWED_NONFINITE.reset(token)


def check_finite(name: str, tensor: torch.Tensor) -> None:
    """Reject NaN or infinite entries (a corrupted file or a diverged run upstream).

    Immediate by default (one host sync); after :func:`defer_finite_checks` the count is only
    recorded on the device and the error comes at the next ``raise_if_any``.
    """
    if name in _ALLOWED_NONFINITE.get():
        return
    deferred = _DEFERRED.get()
    if deferred is not None:
        deferred.record(name, tensor)
        return
    if not torch.isfinite(tensor).all():
        raise ValueError(_nonfinite_message(name, int((~torch.isfinite(tensor)).sum())))


def check_positive_int(name: str, value: int) -> int:
    """Return ``int(value)`` after checking it is at least 1."""
    if int(value) != value or int(value) < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_heads(dim: int, num_heads: int) -> None:
    """Attention splits ``dim`` into ``num_heads`` equal heads."""
    if dim % num_heads:
        raise ValueError(f"dim={dim} is not divisible by num_heads={num_heads}; pick dim as a multiple of num_heads")


def read_mask(meta: Mapping | None, batch: int, count: int, device: torch.device) -> torch.Tensor:
    """``meta['mask']`` as a ``(B, N)`` bool tensor (True = real point); all True when absent."""
    mask = None if meta is None else meta.get("mask")
    if mask is None:
        return torch.ones(batch, count, dtype=torch.bool, device=device)
    if not isinstance(mask, torch.Tensor) or mask.shape != (batch, count):
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"meta['mask'] must be a ({batch}, {count}) bool tensor matching the points, got {shape}")
    if mask.dtype != torch.bool:
        raise ValueError(f"meta['mask'] must have dtype torch.bool (True = real point), got {mask.dtype}")
    return mask.to(device)


def masked_points(
    x: torch.Tensor, coords: torch.Tensor, coord_dim: int, meta: Mapping | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Checked fields ``(B, N, C)``, coords ``(B, N, coord_dim)`` and mask ``(B, N)`` of a padded batch of
    scattered points, the padding zeroed so that junk there (even NaN) reaches neither sums nor gradients."""
    check_points_tensor("fields", x, x.shape[-1])
    batch, count = x.shape[:2]
    check_points_tensor("coords", coords, coord_dim, batch=batch, count=count)
    mask = read_mask(meta, batch, count, x.device)
    keep = mask.unsqueeze(-1)
    x = torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device))
    coords = torch.where(keep, coords, torch.zeros((), dtype=coords.dtype, device=coords.device))
    check_finite("fields", x)
    check_finite("coords", coords)
    return x, coords, mask
