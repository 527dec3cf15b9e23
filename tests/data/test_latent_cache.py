"""LatentCache: cached latents are the frozen encoder's, training with them is unchanged, stale caches fail."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from helpers.latent_cache import GRID, STEPS, fit_autoencoder, operator_module, write_groups_file
from upt_lightning.data.collate import collate_windows
from upt_lightning.data.datasets import TrajectoryWindows
from upt_lightning.data.latent_cache import LatentCache, encoder_fingerprint
from upt_lightning.data.readers import open_source
from upt_lightning.models import MeshEncoder
from upt_lightning.models.normalizer import FieldNormalizer


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("latent_cache") / "waves.h5"
    write_groups_file(path)
    return path


@pytest.fixture(scope="module")
def autoencoder_ckpt(data_path, tmp_path_factory):
    return fit_autoencoder(data_path, tmp_path_factory.mktemp("stage1") / "autoencoder.ckpt")


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
    module = operator_module(autoencoder_ckpt, loss={"lambda_rollout": 0.5})
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


def test_cache_without_fields_serves_latents_and_dt_and_gives_the_same_loss(data_path, autoencoder_ckpt, tmp_path):
    module = operator_module(autoencoder_ckpt, loss={"use_inverse_losses": False})
    assert not module.training_reads_fields() and operator_module(autoencoder_ckpt).training_reads_fields()
    dataset = windows(data_path)
    cache = LatentCache.build(dataset, module, fields=False)
    items = [cache[i] for i in (1, 4, 8)]
    assert set(items[0]) == {"latents", "dt", "traj", "t0"}
    for index, item in zip((1, 4, 8), items):
        original = dataset[index]
        assert (item["traj"], item["t0"]) == (original["traj"], original["t0"])
        torch.testing.assert_close(item["dt"], original["dt"], rtol=0, atol=0)
    latent_batch = cache.collate_fn(items)
    plain_batch = collate_windows([dataset[i] for i in (1, 4, 8)])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*self.log.*")
        cached_loss = module.training_step(latent_batch, 0)
        torch.testing.assert_close(cached_loss, module.training_step(plain_batch, 0), rtol=1e-5, atol=1e-7)
        with pytest.raises(ValueError, match="without fields.*lambda_inv_enc"):
            operator_module(autoencoder_ckpt).training_step(latent_batch, 0)

    cache.save(tmp_path / "latents.pt")
    loaded = LatentCache.load(tmp_path / "latents.pt", dataset, module, fields=False)
    assert set(loaded[2]) == {"latents", "dt", "traj", "t0"}
    torch.testing.assert_close(loaded.dt, cache.dt, rtol=0, atol=0)
    with pytest.raises(ValueError, match="needs each window's dt"):
        LatentCache(dataset, cache.latents, cache.fingerprint, fields=False)


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
