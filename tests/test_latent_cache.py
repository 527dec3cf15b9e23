"""LatentCache: cached latents are the frozen encoder's, training with them is unchanged, stale caches fail."""

from __future__ import annotations

import math
import warnings

import h5py
import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from upt_lightning.data.collate import collate_windows
from upt_lightning.data.datamodules import GridDataModule
from upt_lightning.data.datasets import TrajectoryWindows
from upt_lightning.data.latent_cache import LatentCache, encoder_fingerprint
from upt_lightning.data.readers import open_source
from upt_lightning.models import MeshEncoder
from upt_lightning.modules import AutoencoderModule, OperatorModule
from upt_lightning.modules.normalizer import FieldNormalizer

GRID = (8, 8)
STEPS = 6
TINY = dict(encoder={"kind": "grid", "patch_size": 2, "dim": 16, "depth": 1, "num_heads": 2},
            decoder={"dim": 16, "depth": 1, "num_heads": 2, "num_frequencies": 3},
            latent_tokens=4, latent_dim=8)


def write_groups_file(path, trajectories: int = 4) -> None:
    """PDEBench per-sample groups: '0000'/data (T, X, Y, 2) of waves moving one cell per step."""
    x = (np.arange(GRID[0]) + 0.5) / GRID[0]
    y = (np.arange(GRID[1]) + 0.5) / GRID[1]
    t = np.arange(STEPS) * 0.1
    with h5py.File(path, "w") as file:
        file.attrs["field_names"] = np.array(["u", "v"], dtype="S")
        for n in range(trajectories):
            phase = 2 * math.pi * n / trajectories
            shift = t[:, None, None] * 10 / GRID[0]
            u = np.sin(2 * math.pi * (x[None, :, None] - shift) + phase) + 0 * y[None, None, :]
            v = np.cos(2 * math.pi * (y[None, None, :] + shift) + phase) + 0.5 + 0 * x[None, :, None]
            group = file.create_group(f"{n:04d}")
            group["data"] = np.stack([u, v], axis=-1).astype(np.float32)
            group["grid/x"], group["grid/y"], group["grid/t"] = x, y, t


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("latent_cache") / "waves.h5"
    write_groups_file(path)
    return path


@pytest.fixture(scope="module")
def autoencoder_ckpt(data_path, tmp_path_factory):
    """A stage-1 checkpoint from a real two-step fit, with the data's normalisation statistics."""
    datamodule = GridDataModule(str(data_path), batch_size=4, split=(0.5, 0.25, 0.25), rollout_horizon=2)
    model = AutoencoderModule(field_channels={"u": 1, "v": 1}, coord_dim=2, grid_shape=GRID, num_queries=32, **TINY)
    trainer = pl.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, datamodule=datamodule)
    path = tmp_path_factory.mktemp("stage1") / "autoencoder.ckpt"
    trainer.save_checkpoint(path)
    return path


def operator_module(ckpt, **kwargs) -> OperatorModule:
    torch.manual_seed(0)
    args = dict(operator={"dim": 16, "depth": 1, "num_heads": 2}, num_queries=24, lambda_inv_enc=0.5,
                lambda_inv_dec=0.5)
    return OperatorModule(autoencoder_ckpt=str(ckpt), **{**args, **kwargs})


def windows(data_path, horizon: int = 2) -> TrajectoryWindows:
    return TrajectoryWindows(open_source(data_path), [0, 1, 2, 3], horizon=horizon)


def test_cached_latents_equal_encoding_each_frame_on_its_own(data_path, autoencoder_ckpt):
    module = operator_module(autoencoder_ckpt)
    dataset = windows(data_path)
    cache = LatentCache.build(dataset, module, batch_size=3)
    assert len(cache) == len(dataset) == 4 * (STEPS - 2)
    assert cache.latents.shape == (len(dataset), 3, 4, 8)
    for index in (0, 5, len(dataset) - 1):
        item, original = cache[index], dataset[index]
        torch.testing.assert_close(item["fields"], original["fields"], rtol=0, atol=0)
        torch.testing.assert_close(item["targets"], original["targets"], rtol=0, atol=0)
        frames = torch.cat([original["fields"][None], original["targets"]])  # (3, N, C) raw
        with torch.no_grad():
            expected = torch.stack([
                module.encode(module.normalizer.normalize_fields(frame)[None],
                              module.normalizer.normalize_coords(original["coords"])[None],
                              {"grid_shape": GRID})[0]
                for frame in frames
            ])
        torch.testing.assert_close(item["latents"], expected, rtol=1e-5, atol=1e-5)
    assert module.training, "build must restore the module's training mode"


def test_training_step_with_cache_gives_the_same_loss_without_encoding(data_path, autoencoder_ckpt):
    module = operator_module(autoencoder_ckpt, lambda_rollout=0.5)
    cache = LatentCache.build(windows(data_path), module)
    items = [cache[i] for i in (0, 3, 7, 9)]
    cached_batch = cache.collate_fn(items)
    plain_batch = collate_windows([{k: v for k, v in item.items() if k != "latents"} for item in items])
    assert "latents" not in plain_batch and cached_batch["latents"].shape == (4, 3, 4, 8)

    calls = []
    module.encoder.register_forward_hook(lambda *args: calls.append(1))
    losses = {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*self.log.*")
        for name, batch in (("plain", plain_batch), ("cached", cached_batch)):
            calls.clear()
            loss = module.training_step(batch, 0)
            loss.backward()
            losses[name] = (loss.detach(), len(calls), module.operator.in_proj.weight.grad.clone())
            module.zero_grad(set_to_none=True)
    # Without the cache the encoder runs for z_t, for the targets and inside L_inv_dec; with it only there.
    assert losses["plain"][1] == 3 and losses["cached"][1] == 1
    torch.testing.assert_close(losses["cached"][0], losses["plain"][0], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(losses["cached"][2], losses["plain"][2], rtol=1e-4, atol=1e-7)


def test_cache_serves_batches_through_a_dataloader(data_path, autoencoder_ckpt):
    module = operator_module(autoencoder_ckpt)
    cache = LatentCache.build(windows(data_path), module)
    batches = list(DataLoader(cache, batch_size=5, collate_fn=cache.collate_fn))
    stacked = torch.cat([batch["latents"] for batch in batches])
    torch.testing.assert_close(stacked, cache.latents, rtol=0, atol=0)
    assert batches[0]["fields"].shape == (5, math.prod(GRID), 2)


def test_other_encoder_weights_or_statistics_are_detected(data_path, autoencoder_ckpt):
    module = operator_module(autoencoder_ckpt)
    cache = LatentCache.build(windows(data_path), module)
    cache.check(operator_module(autoencoder_ckpt))  # same stage-1 weights, fresh operator: accepted

    other_weights = operator_module(autoencoder_ckpt)
    with torch.no_grad():
        other_weights.encoder.patch_embed.weight[0, 0] += 1e-3
    with pytest.raises(ValueError, match="different encoder"):
        cache.check(other_weights)

    other_stats = operator_module(autoencoder_ckpt)
    other_stats.normalizer.field_std.mul_(2.0)
    assert encoder_fingerprint(other_stats) != cache.fingerprint
    with pytest.raises(ValueError, match="rebuild it"):
        cache.check(other_stats)


def test_fingerprint_covers_encoder_settings_that_are_not_weights():
    def holder(radius: float) -> nn.Module:
        torch.manual_seed(0)
        module = nn.Module()
        module.encoder = MeshEncoder({"u": 1}, num_supernodes=8, radius=radius, dim=16, depth=1, num_heads=2)
        module.normalizer = FieldNormalizer(1, 2)
        return module

    assert encoder_fingerprint(holder(0.1)) == encoder_fingerprint(holder(0.1))
    assert encoder_fingerprint(holder(0.1)) != encoder_fingerprint(holder(0.2))
    with pytest.raises(TypeError, match="no 'encoder'"):
        encoder_fingerprint(nn.Linear(2, 2))


def test_saved_cache_loads_for_its_windows_and_encoder_only(data_path, autoencoder_ckpt, tmp_path):
    module = operator_module(autoencoder_ckpt)
    dataset = windows(data_path)
    path = tmp_path / "latents.pt"
    LatentCache.build(dataset, module).save(path)

    loaded = LatentCache.load(path, dataset, module)
    torch.testing.assert_close(loaded.latents, LatentCache.build(dataset, module).latents, rtol=0, atol=0)
    with pytest.raises(ValueError, match="other windows"):
        LatentCache.load(path, windows(data_path, horizon=1), module)
    changed = operator_module(autoencoder_ckpt)
    with torch.no_grad():
        changed.encoder.norm.bias.add_(0.1)
    with pytest.raises(ValueError, match="different encoder"):
        LatentCache.load(path, dataset, changed)


def test_trainable_encoder_and_wrong_latent_shapes_are_refused(data_path, autoencoder_ckpt):
    end_to_end = operator_module(autoencoder_ckpt, freeze_autoencoder=False)
    with pytest.raises(ValueError, match="freeze_autoencoder=True"):
        LatentCache.build(windows(data_path), end_to_end)
    dataset = windows(data_path)
    with pytest.raises(ValueError, match=r"horizon \+ 1"):
        LatentCache(dataset, torch.zeros(len(dataset), 2, 4, 8), "x")
    with pytest.raises(ValueError, match="NaN"):
        LatentCache(dataset, torch.full((len(dataset), 3, 4, 8), float("nan")), "x")
