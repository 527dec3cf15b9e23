"""Models and synthetic inputs the benchmarks share.

Timing and memory do not depend on the weight values, so the frozen encoder/decoder here keep
their random initialisation; no stage-1 training is needed to measure them.
"""

from __future__ import annotations

import math

import torch

from upt_lightning.bench.presets import FIELDS
from upt_lightning.models.anchors import anchor_factors
from upt_lightning.modules import OperatorModule

UNTRAINED = "benchmark: random frozen weights (timings and memory do not depend on their values)"


def grid_coords(grid_shape: tuple[int, ...]) -> torch.Tensor:
    """Cell-centred points of the unit grid in row-major order: ``(prod(grid_shape), d)``."""
    axes = [(torch.arange(n) + 0.5) / n for n in grid_shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(grid_shape))


def smooth_fields(batch: int, coords: torch.Tensor, channels: int, seed: int = 0) -> torch.Tensor:
    """Sums of a few random low Fourier modes at ``coords (N, d)``: ``(batch, N, channels)``, O(1) values."""
    gen = torch.Generator().manual_seed(seed)
    modes = 4
    wavenumbers = torch.randint(1, 4, (batch, channels, modes, coords.shape[1]), generator=gen).float()
    phases = torch.rand(batch, channels, modes, 1, generator=gen) * 2 * math.pi
    angles = 2 * math.pi * torch.einsum("bcmd,nd->bcmn", wavenumbers, coords) + phases
    return angles.sin().mean(dim=2).transpose(1, 2).contiguous()


def grid_operator_module(
    preset: dict,
    grid_shape: tuple[int, ...],
    num_queries: int | None = None,
    query_strategy: str = "uniform",
    device: torch.device = torch.device("cpu"),
    sampled_inverse_gradient: bool = True,
) -> OperatorModule:
    """An OperatorModule with a frozen GridEncoder/AnyPointDecoder of ``preset`` and default loss weights.

    A preset with one latent token per patch keeps its token count on any grid: the patches grow with
    the grid (patch 16 on 128x128 for the 64 tokens that patch 8 gives on 64x64).
    """
    encoder = {"kind": "grid", **preset["grid_encoder"]}
    if encoder.get("pooling") == "patch":
        factors = anchor_factors(preset["latent_tokens"], len(grid_shape))
        encoder["patch_size"] = [size // count for size, count in zip(grid_shape, factors)]
    autoencoder = {
        "field_channels": FIELDS, "coord_dim": len(grid_shape), "grid_shape": tuple(grid_shape),
        "encoder": encoder, "decoder": preset["decoder"],
        "latent_tokens": preset["latent_tokens"], "latent_dim": preset["latent_dim"], "source": UNTRAINED,
    }
    module = OperatorModule(
        autoencoder=autoencoder, operator=preset["operator"],
        loss={"sampled_inverse_gradient": sampled_inverse_gradient},
        sampling={"num_queries": num_queries, "strategy": query_strategy},
    )
    return module.to(device)


def grid_fno_module(preset: dict, grid_shape: tuple[int, ...], device: torch.device = torch.device("cpu")):
    """The FNO baseline of ``preset`` (conf/model/fno.yaml) for the benchmark fields on ``grid_shape``, untrained.

    Imports neuraloperator: call :func:`upt_lightning.baselines.require_neuralop` first to report its absence.
    """
    from upt_lightning.baselines import FNOModule

    module = FNOModule(FIELDS, grid_shape, n_modes=preset["n_modes"], hidden_channels=preset["hidden_channels"],
                       n_layers=preset["n_layers"], fno_kwargs=preset.get("fno_kwargs") or {})
    return module.to(device)


def grid_batch(batch: int, grid_shape: tuple[int, ...], horizon: int = 1, device=torch.device("cpu")) -> dict:
    """A DataModule-style batch: fields (B, N, 2), targets (B, K, N, 2), coords (B, N, d), dt (B,)."""
    coords = grid_coords(grid_shape)
    frames = smooth_fields(batch * (horizon + 1), coords, len(FIELDS)).unflatten(0, (batch, horizon + 1))
    return {
        "fields": frames[:, 0].to(device),
        "targets": frames[:, 1:].to(device),
        "coords": coords.expand(batch, -1, -1).contiguous().to(device),
        "dt": torch.ones(batch, device=device),
    }
