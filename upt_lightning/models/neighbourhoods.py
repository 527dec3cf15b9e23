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


DEFAULT_SEARCH_BUDGET_BYTES = 256 * 2**20


def centres_per_chunk(batch: int, points: int, element_size: int, budget_bytes: int) -> int:
    """Centres whose ``(batch, chunk, points)`` distance matrix fits in ``budget_bytes`` (at least 1).

    With one centre per chunk the matrix still needs ``element_size * batch * points`` bytes, above
    a budget smaller than that.
    """
    return max(1, int(budget_bytes) // (element_size * batch * max(points, 1)))


def radius_neighbours(
    coords: torch.Tensor,
    centres: torch.Tensor,
    mask: torch.Tensor,
    radius: float,
    max_neighbours: int,
    chunk_size: int | None = None,
    budget_bytes: int = DEFAULT_SEARCH_BUDGET_BYTES,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The up to ``k`` nearest valid points within ``radius`` of each centre.

    Args:
        coords: ``(B, N, d)`` point positions.
        centres: ``(B, S, d)`` query positions (the supernodes).
        mask: ``(B, N)`` bool, True for real points.
        radius: inclusive cut-off distance.
        max_neighbours: cap ``k`` on the neighbours per centre (``min(k, N)`` slots are returned).
        chunk_size: centres handled at once; None derives it from ``budget_bytes``.
        budget_bytes: memory for one chunk's ``(B, chunk, N)`` distance matrix, the search's peak
            (see :func:`centres_per_chunk`); it no longer grows with the batch size or ``N``.

    Returns:
        ``idx (B, S, k)`` long indices into ``N`` ordered by distance and ``valid (B, S, k)`` bool;
        slots with ``valid`` False (outside the radius or padding) hold arbitrary indices.
        Chunking does not change them: every centre's row is computed on its own.
    """
    batch, count = coords.shape[:2]
    k = min(max_neighbours, count)
    if chunk_size is None:
        chunk_size = centres_per_chunk(batch, count, coords.element_size(), budget_bytes)
    invalid = ~mask.unsqueeze(1)
    indices, valids = [], []
    # Indices and a comparison carry no gradient; without autograd no chunk's matrix is kept.
    with torch.no_grad():
        for start in range(0, centres.shape[1], chunk_size):
            # The matmul form of cdist loses precision (a point's distance to itself is not 0), so
            # ties at the radius and the self-neighbour would depend on rounding; the direct form is exact.
            dist = torch.cdist(
                centres[:, start : start + chunk_size], coords, compute_mode="donot_use_mm_for_euclid_dist"
            )
            dist.masked_fill_(invalid, float("inf"))  # in place: one (B, chunk, N) matrix, not two
            nearest, idx = dist.topk(k, dim=2, largest=False)
            del dist  # free this chunk's matrix before the next one is allocated
            indices.append(idx)
            valids.append(nearest <= radius)
    return torch.cat(indices, dim=1), torch.cat(valids, dim=1)
