"""Supernode choice and radius neighbourhoods for padded batches of scattered points, in plain PyTorch.

These replace ``torch_cluster.fps``/``radius`` of the UPT code: a chunked ``torch.cdist`` plus
``topk`` picks the truly nearest points and needs no compiled extension.
"""

from __future__ import annotations

import torch


def choose_supernodes(
    mask: torch.Tensor, num_supernodes: int, random: bool, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Pick ``num_supernodes`` distinct valid points per sample; ``mask (B, N)`` -> ``(B, S)`` long.

    ``random=True`` draws a uniform random subset of the valid points. Otherwise the choice is
    deterministic: the ``j``-th supernode is the valid point of rank ``floor(j * n_valid / S)`` in
    input order, i.e. evenly spaced along the input order of the valid points, so padding
    inserted anywhere does not change which real points are chosen.
    """
    counts = mask.sum(dim=1)
    if int(counts.min()) < num_supernodes:
        raise ValueError(
            f"a sample has only {int(counts.min())} valid points (counts per sample: {counts.tolist()}) "
            f"but num_supernodes={num_supernodes}; lower num_supernodes to at most the smallest point count"
        )
    if random:
        scores = torch.rand(mask.shape, generator=generator, device=mask.device)
        scores = scores.masked_fill(~mask, 2.0)  # above every uniform draw: never chosen
        return scores.topk(num_supernodes, dim=1, largest=False).indices
    valid_first = torch.argsort((~mask).to(torch.uint8), dim=1, stable=True)
    ranks = torch.arange(num_supernodes, device=mask.device) * counts.unsqueeze(1) // num_supernodes
    return valid_first.gather(1, ranks)


def radius_neighbours(
    coords: torch.Tensor,
    centres: torch.Tensor,
    mask: torch.Tensor,
    radius: float,
    max_neighbours: int,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The up to ``k`` nearest valid points within ``radius`` of each centre.

    Args:
        coords: ``(B, N, d)`` point positions.
        centres: ``(B, S, d)`` query positions (the supernodes).
        mask: ``(B, N)`` bool, True for real points.
        radius: inclusive cut-off distance.
        max_neighbours: cap ``k`` on the neighbours per centre (``min(k, N)`` slots are returned).
        chunk_size: centres handled at once; memory is ``O(B * chunk_size * N)``.

    Returns:
        ``idx (B, S, k)`` long indices into ``N`` ordered by distance and ``valid (B, S, k)`` bool;
        slots with ``valid`` False (outside the radius or padding) hold arbitrary indices.
    """
    k = min(max_neighbours, coords.shape[1])
    invalid = ~mask.unsqueeze(1)
    indices, valids = [], []
    for start in range(0, centres.shape[1], chunk_size):
        # The matmul form of cdist loses precision (a point's distance to itself is not 0), so
        # ties at the radius and the self-neighbour would depend on rounding; the direct form is exact.
        dist = torch.cdist(centres[:, start : start + chunk_size], coords, compute_mode="donot_use_mm_for_euclid_dist")
        dist = dist.masked_fill(invalid, float("inf"))
        nearest, idx = dist.topk(k, dim=2, largest=False)
        indices.append(idx)
        valids.append(nearest <= radius)
    return torch.cat(indices, dim=1), torch.cat(valids, dim=1)
