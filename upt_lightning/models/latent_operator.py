"""Transformer that advances the latent tokens by one time step ``dt``."""

from __future__ import annotations

import torch
from torch import nn

from upt_lightning.models.embeddings import SincosEmbedding
from upt_lightning.models.modulated_block import ModulatedBlock, ModulatedOutput
from upt_lightning.models.validation import check_finite, check_heads, check_points_tensor, check_positive_int

# Step sizes of PDE data lie between about 1e-3 and 10; scaling by 1000 spreads them over the
# sin-cos frequencies the way DiT's diffusion steps (0..1000) are.
DT_SCALE = 1000.0


class LatentOperator(nn.Module):
    """Residual next-latent prediction ``z + delta(z, dt)``: ``(B, latent_tokens, latent_dim)`` in and out.

    ``dt`` (float, scalar tensor or ``(B,)`` tensor) is sin-cos embedded and mapped by an MLP to a
    conditioning vector that sets shift, scale and gate of every block (DiT adaLN-Zero). Gates
    and output projection start at zero, so a fresh operator is the identity map: training
    starts at the persistence baseline.

    With ``num_datasets > 0`` (one model over several datasets) a learned embedding of the dataset index
    is added to the conditioning vector: the dataset conditions every block as the time step does, and
    ``forward`` needs ``dataset`` ((B,) int64 or an int).
    """

    def __init__(
        self, latent_dim: int, latent_tokens: int, dim: int = 128, depth: int = 4, num_heads: int = 4,
        mlp_ratio: float = 4.0, num_datasets: int = 0,
    ):
        super().__init__()
        self.latent_dim = check_positive_int("latent_dim", latent_dim)
        self.latent_tokens = check_positive_int("latent_tokens", latent_tokens)
        check_heads(dim, num_heads)
        self.dim = dim
        self.depth = depth
        self.num_heads = num_heads
        self.mlp_ratio = mlp_ratio

        self.in_proj = nn.Linear(latent_dim, dim)
        self.pos_embed = nn.Parameter(torch.empty(1, latent_tokens, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.dt_features = SincosEmbedding(1, dim, scale=DT_SCALE)
        self.dt_embed = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.blocks = nn.ModuleList(ModulatedBlock(dim, num_heads, mlp_ratio) for _ in range(depth))
        self.out = ModulatedOutput(dim, latent_dim)
        if num_datasets < 0:
            raise ValueError(f"num_datasets must be >= 0, got {num_datasets}")
        self.num_datasets = int(num_datasets)
        self.dataset_embed = nn.Embedding(num_datasets, dim) if num_datasets else None
        if self.dataset_embed is not None:
            nn.init.trunc_normal_(self.dataset_embed.weight, std=0.02)

    def conditioning_parameters(self) -> list[nn.Parameter]:
        """The weights that act on the conditioning vector (time step, dataset) rather than on the tokens: the
        time-step MLP, the dataset embedding and every adaLN modulation layer. Their gradients have rank at most
        the number of distinct conditions in a batch (one for a fixed time step), so Muon's orthogonalised step
        would hardly move them while paying for their Newton-Schulz iterations; they train with AdamW."""
        modules = [self.dt_embed, *(block.modulation for block in self.blocks), self.out.modulation]
        if self.dataset_embed is not None:
            modules.append(self.dataset_embed)
        return [p for module in modules for p in module.parameters()]

    def _dt_batch(self, dt: float | torch.Tensor, batch: int, like: torch.Tensor) -> torch.Tensor:
        """``dt`` as a ``(B,)`` tensor of ``like``'s dtype and device."""
        dt = torch.as_tensor(dt, dtype=like.dtype, device=like.device)
        if dt.ndim == 0:
            dt = dt.expand(batch)
        if dt.shape != (batch,):
            raise ValueError(f"dt must be a float, a scalar tensor or a ({batch},) tensor, got shape {tuple(dt.shape)}")
        check_finite("dt", dt)
        return dt

    def forward(self, z: torch.Tensor, dt: float | torch.Tensor, dataset: int | torch.Tensor | None = None) -> torch.Tensor:
        check_points_tensor("z", z, self.latent_dim, count=self.latent_tokens)
        dt = self._dt_batch(dt, z.shape[0], z)
        cond = self.dt_embed(self.dt_features(dt.unsqueeze(-1)))
        if self.dataset_embed is not None:
            if dataset is None:
                raise ValueError(f"this operator serves {self.num_datasets} datasets: pass dataset= (index per sample)")
            index = torch.as_tensor(dataset, device=z.device, dtype=torch.long).reshape(-1).expand(z.shape[0])
            cond = cond + self.dataset_embed(index)
        elif dataset is not None:
            raise ValueError("dataset= given, but this operator was built for one dataset (num_datasets=0)")
        x = self.in_proj(z) + self.pos_embed
        for block in self.blocks:
            x = block(x, cond)
        return z + self.out(x, cond)
