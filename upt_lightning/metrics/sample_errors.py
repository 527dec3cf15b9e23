"""Per-sample error statistics in physical space, following PDEBench's ``metric_func``.

Every function takes S samples of N points and C channels, ``(S, N, C)``, and returns one value
per sample and channel, ``(S, C)``. A mask ``(S, N)`` (True = real point) restricts the means
to the real points of padded mesh batches. The metric classes add these up over samples.
"""

from __future__ import annotations

import torch


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over points of ``values`` (S, N, C), real points only when a mask (S, N) is given."""
    if mask is None:
        return values.mean(dim=1)
    real = mask.unsqueeze(-1)
    # where() rather than a product with the mask, so that NaN padding cannot leak into the sum.
    total = torch.where(real, values, torch.zeros_like(values)).sum(dim=1)
    return total / real.sum(dim=1).to(values.dtype)


def rmse(error: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Root mean square of ``error = pred - target`` over points: (S, N, C) -> (S, C)."""
    return masked_mean(error.square(), mask).sqrt()


def target_rms(target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Root mean square of the target, the nRMSE denominator: (S, N, C) -> (S, C).

    PDEBench divides without a guard and returns inf/NaN for an all-zero target; a ValueError
    tells the user instead that nRMSE is undefined there.
    """
    rms = masked_mean(target.square(), mask).sqrt()
    if (rms == 0).any():
        sample, channel = (rms == 0).nonzero()[0].tolist()
        raise ValueError(
            f"target channel {channel} of sample {sample} is zero at every point, so nRMSE (RMSE / RMS of "
            "the target) is undefined; remove such samples or evaluate that channel with RMSE only"
        )
    return rms


def mean_error(error: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Spatial mean of the error, the error of the conserved quantity (cRMSE): (S, N, C) -> (S, C).

    PDEBench sums over the grid and divides by the point count. On a mesh this is the mean over
    points, which equals the domain average only for uniformly spread points.
    """
    return masked_mean(error, mask)


def max_abs_error(error: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Largest absolute error over points: (S, N, C) -> (S, C)."""
    magnitude = error.abs()
    if mask is not None:
        magnitude = torch.where(mask.unsqueeze(-1), magnitude, torch.zeros_like(magnitude))
    return magnitude.amax(dim=1)


def boundary_rmse(error: torch.Tensor, grid_shape: tuple[int, ...]) -> torch.Tensor:
    """RMSE over the faces of a row-major grid: (S, N, C) -> (S, C).

    As PDEBench: for every axis the first and last slice are faces, the squared errors of all
    faces are summed and divided by their total size (2 in 1D, 2 nx + 2 ny in 2D), so an edge
    or corner point counts once per face it lies on. PDEBench's 3D branch also sums over the
    channels; here every channel keeps its own value in any dimension.
    """
    squared = error.square().reshape(error.shape[0], *grid_shape, error.shape[-1])
    total = torch.zeros(error.shape[0], error.shape[-1], dtype=error.dtype, device=error.device)
    face_points = 0
    for axis, length in enumerate(grid_shape, start=1):
        for index in (0, length - 1):
            face = squared.select(axis, index)
            total = total + face.reshape(error.shape[0], -1, error.shape[-1]).sum(dim=1)
            face_points += face[0, ..., 0].numel()
    return (total / face_points).sqrt()
