"""Encoder of fields on scattered points into one latent token per region of a regular grid.

The mesh counterpart of :class:`~upt_lightning.models.grid_encoder.GridEncoder` with ``pooling="patch"``:
the domain ``[0, 1]^d`` is cut into the cells of the decoder's anchor grid (one cell per latent token), and
each token starts from a least-squares fit of every field channel by Legendre polynomials over the points in a
window around its cell. A fit, unlike a mean of per-point messages, does not depend on where the points lie
as long as the field is smooth over the window: two meshes of one flow give nearly the same tokens, and every
point is read (the supernode encoder sees only the points near its supernodes).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import torch
from torch import nn

from upt_lightning.fields import cat_fields, total_channels, validate_field_spec
from upt_lightning.models.anchors import anchor_factors, cell_centred_grid
from upt_lightning.models.blocks import TransformerBlock
from upt_lightning.models.embeddings import SincosEmbedding
from upt_lightning.models.validation import check_heads, check_positive_int, masked_points


def legendre(x: torch.Tensor, degree: int) -> torch.Tensor:
    """Legendre polynomials ``P_0..P_degree`` of ``x (...)`` in [-1, 1] -> ``(..., degree + 1)``."""
    values = [torch.ones_like(x), x]
    for n in range(1, degree):
        values.append(((2 * n + 1) * x * values[n] - n * values[n - 1]) / (n + 1))
    return torch.stack(values[: degree + 1], dim=-1)


def polynomial_exponents(coord_dim: int, degree: int) -> list[tuple[int, ...]]:
    """Exponent tuples of the products ``P_i(x) P_j(y) ...`` of total degree <= ``degree``."""
    return [e for e in itertools.product(range(degree + 1), repeat=coord_dim) if sum(e) <= degree]


class RegionEncoder(nn.Module):
    """Encode ``N`` scattered points of a padded batch into ``(B, latent_tokens, latent_dim)``.

    ``latent_tokens`` cells tile ``[0, 1]^d`` like the decoder's anchors (8 x 8 for 64 tokens in 2D). A point
    belongs to the window of every cell whose centre is within ``window / 2`` cell widths of it along each
    axis (``window`` 1: the cell itself; 1.5: the cell and half of each neighbour's width around it). Per
    window, the coefficients of the least-squares fit ``field(x) ~ sum_e c_e P_e(local x)`` (products of
    Legendre polynomials of total degree <= ``degree``, ridge ``ridge`` relative to the point count) are the
    token's input: a linear map of them plus the cell centre's sin-cos features, a transformer over the
    tokens, and a per-token projection to ``latent_dim``.

    ``periodic``: coordinates live on the unit torus, and the windows of border cells wrap around.
    ``meta`` may hold ``"mask"`` ``(B, N)`` bool (True = real point; padding never changes the result).
    """

    accepts_point_subsets = True
    pooling = "region"

    def __init__(
        self,
        field_channels: Mapping[str, int],
        coord_dim: int = 2,
        degree: int = 4,
        window: float = 1.5,
        ridge: float = 1e-3,
        periodic: bool = False,
        dim: int = 64,
        depth: int = 2,
        num_heads: int = 4,
        latent_tokens: int = 16,
        latent_dim: int = 32,
        mlp_ratio: float = 4.0,
    ):
        super().__init__()
        self.field_channels = validate_field_spec(field_channels)
        self.coord_dim = check_positive_int("coord_dim", coord_dim)
        self.degree = check_positive_int("degree", degree)
        if not 1.0 <= float(window) <= 3.0:
            raise ValueError(f"window must lie in [1, 3] cell widths (1: the cell alone), got {window}")
        if not float(ridge) > 0:
            raise ValueError(f"ridge must be positive (it keeps a window with few points solvable), got {ridge}")
        self.window, self.ridge, self.periodic = float(window), float(ridge), bool(periodic)
        check_heads(dim, num_heads)
        self.dim, self.depth, self.num_heads = dim, depth, num_heads
        self.latent_tokens = check_positive_int("latent_tokens", latent_tokens)
        self.latent_dim, self.mlp_ratio = latent_dim, mlp_ratio
        self.cells_per_axis = anchor_factors(self.latent_tokens, self.coord_dim)
        centres = cell_centred_grid(self.cells_per_axis).reshape(self.latent_tokens, self.coord_dim)
        self.register_buffer("cells", torch.tensor(self.cells_per_axis), persistent=False)
        self.register_buffer(
            "exponents", torch.tensor(polynomial_exponents(self.coord_dim, self.degree)), persistent=False
        )
        self.register_buffer(
            "neighbour_offsets", torch.tensor(list(itertools.product((-1, 0, 1), repeat=self.coord_dim))),
            persistent=False,
        )
        channels = total_channels(self.field_channels)
        self.coefficient_embed = nn.Linear(len(self.exponents) * channels, dim)
        self.register_buffer("pos_embed", SincosEmbedding(self.coord_dim, dim)(centres).unsqueeze(0), persistent=False)
        self.blocks = nn.ModuleList(TransformerBlock(dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.pool = nn.Linear(dim, latent_dim)

    def basis(self, local: torch.Tensor) -> torch.Tensor:
        """``(..., d)`` window coordinates in [-1, 1] -> ``(..., J)`` polynomial products, J = len(exponents)."""
        per_axis = legendre(local, self.degree)  # (..., d, degree + 1)
        picked = per_axis.gather(-1, self.exponents.T.expand(*local.shape[:-1], -1, -1))  # (..., d, J)
        return picked.prod(dim=-2)

    def window_members(self, coords: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Point-window pairs: ``(batch, point, cell)`` long indices ``(P,)`` each and window coordinates ``(P, d)``."""
        cells = self.cells
        scaled = coords * cells  # in cell widths
        home = scaled.floor().long().clamp(min=torch.zeros_like(cells), max=cells - 1)  # (B, N, d)
        candidates = home.unsqueeze(2) + self.neighbour_offsets  # (B, N, 3^d, d)
        inside = torch.ones(candidates.shape[:-1], dtype=torch.bool, device=coords.device)
        if self.periodic:
            candidates = candidates % cells
        else:
            inside = ((candidates >= 0) & (candidates < cells)).all(-1)
        offset = scaled.unsqueeze(2) - (candidates + 0.5)
        if self.periodic:
            offset = offset - torch.round(offset / cells) * cells
        local = offset * (2.0 / self.window)
        member = inside & (local.abs() <= 1.0).all(-1) & mask.unsqueeze(-1)
        batch_idx, point_idx, slot = member.nonzero(as_tuple=True)
        flat_cell = torch.zeros_like(batch_idx)
        chosen = candidates[batch_idx, point_idx, slot]
        for axis, size in enumerate(self.cells_per_axis):  # row-major, as cell_centred_grid
            flat_cell = flat_cell * size + chosen[:, axis]
        return batch_idx, point_idx, flat_cell, local[batch_idx, point_idx, slot]

    def fit(self, x: torch.Tensor, coords: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Least-squares coefficients ``(B, T, J, C)`` of the fields ``x (B, N, C)`` in every cell's window."""
        batch, channels = x.shape[0], x.shape[-1]
        tokens, terms = self.latent_tokens, len(self.exponents)
        with torch.no_grad():  # positions carry no gradient; only the right-hand side depends on the fields
            batch_idx, point_idx, cell, local = self.window_members(coords, mask)
            phi = self.basis(local.to(x.dtype))  # (P, J)
            slot = batch_idx * tokens + cell
            gram = phi.new_zeros(batch * tokens, terms * terms)
            gram.index_add_(0, slot, (phi.unsqueeze(-1) * phi.unsqueeze(-2)).reshape(-1, terms * terms))
            counts = torch.bincount(slot, minlength=batch * tokens).to(x.dtype)
            # The ridge scales with the point count, so a window's fit does not depend on how densely it is sampled.
            eye = torch.eye(terms, dtype=x.dtype, device=x.device)
            gram = gram.view(-1, terms, terms) + (self.ridge * counts.clamp(min=1.0)).view(-1, 1, 1) * eye
            factor = torch.linalg.cholesky(gram)
        rhs = x.new_zeros(batch * tokens, terms * channels)
        rhs = rhs.index_add(0, slot, (phi.unsqueeze(-1) * x[batch_idx, point_idx].unsqueeze(-2)).reshape(-1, terms * channels))
        coefficients = torch.cholesky_solve(rhs.view(-1, terms, channels), factor)
        return coefficients.view(batch, tokens, terms, channels)

    def forward(self, fields, coords: torch.Tensor, meta: Mapping | None = None) -> torch.Tensor:
        x, coords, mask = masked_points(cat_fields(fields, self.field_channels), coords, self.coord_dim, meta)
        coefficients = self.fit(x, coords, mask)
        tokens = self.coefficient_embed(coefficients.flatten(2)) + self.pos_embed
        for block in self.blocks:
            tokens = block(tokens)
        return self.pool(self.norm(tokens))
