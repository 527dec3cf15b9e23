"""One model over a grid dataset and a mesh dataset: a GridEncoder patch stem and a MeshEncoder supernode stem
around one shared encoder trunk, each dataset's own heads and normaliser, padded mesh batches, per-dataset metrics
and a checkpoint that routes by dataset."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from helpers.modules import short_trainer
from upt_lightning.data import MultiDataModule
from upt_lightning.data.writers import MeshWriter, PDEBench2DWriter
from upt_lightning.models import UPT
from upt_lightning.models.grid_encoder import GridEncoder
from upt_lightning.models.mesh_encoder import MeshEncoder
from upt_lightning.models.region_encoder import RegionEncoder
from upt_lightning.modules import AutoencoderModule, OperatorModule

STEPS = 6
MESH_ENCODER = {"kind": "mesh", "num_supernodes": 16, "radius": 0.3, "max_neighbours": 8, "dim": 32, "depth": 1,
                "num_heads": 2}
DATASETS = {
    "flow": {"field_channels": {"u": 1, "v": 1}, "grid_shape": [16, 16], "encoder": {"patch_size": 4}},
    "cloud": {"field_channels": {"p": 1}, "grid_shape": None, "encoder": MESH_ENCODER},
}
ENCODER = {"kind": "grid", "dim": 32, "depth": 1, "num_heads": 2, "pooling": "patch"}
DECODER = {"dim": 32, "depth": 1, "num_heads": 2, "num_frequencies": 3}
OPERATOR = {"dim": 32, "depth": 1, "num_heads": 2}


def wave(x, y, t, phase, offset, amplitude):
    return offset + amplitude * np.sin(2 * np.pi * (x + y) + phase - 0.3 * t)


def write_grid(path, trajectories=10, size=16):
    rng = np.random.default_rng(0)
    x = np.linspace(0, 1, size, endpoint=False)
    xx, yy = np.meshgrid(x, x, indexing="ij")
    data = np.empty((trajectories, STEPS, size, size, 2), np.float32)
    for i in range(trajectories):
        phase = rng.uniform(0, 2 * np.pi, 2)
        for t in range(STEPS):
            for c in range(2):
                data[i, t, ..., c] = wave(xx, yy, t, phase[c], c, 1.0)
    with PDEBench2DWriter(path, num=trajectories, x=x, y=x, t=np.arange(STEPS) * 0.1, field_names=["u", "v"]) as w:
        w.append(data)


def write_mesh(path, trajectories=20):
    """Another point set (and point count, 40 to 70) per trajectory, so batches are padded."""
    rng = np.random.default_rng(1)
    with MeshWriter(path, num=trajectories, field_names=["p"]) as writer:
        for _ in range(trajectories):
            count = int(rng.integers(40, 71))
            coords = rng.uniform(0, 1, (count, 2)).astype(np.float32)
            phase = rng.uniform(0, 2 * np.pi)
            data = np.stack([wave(coords[:, 0], coords[:, 1], t, phase, 5.0, 2.0) for t in range(STEPS)])
            writer.append(coords, data[..., None], np.arange(STEPS) * 0.1)


@pytest.fixture(scope="module")
def datamodule(tmp_path_factory):
    root = tmp_path_factory.mktemp("multi_mesh")
    write_grid(root / "flow.h5")
    write_mesh(root / "cloud.h5")
    dm = MultiDataModule({"flow": {"path": str(root / "flow.h5"), "rollout_horizon": 3},
                          "cloud": {"path": str(root / "cloud.h5"), "kind": "mesh", "rollout_horizon": 3}},
                         batch_size=4, seed=0, mixing={"flow": 1, "cloud": 1})  # both among the first batches
    dm.prepare_data()
    dm.setup("fit")
    return dm


def autoencoder(encoder=ENCODER, datasets=DATASETS) -> AutoencoderModule:
    torch.manual_seed(0)
    return AutoencoderModule({"u": 1, "v": 1}, 2, (16, 16), encoder, DECODER, latent_tokens=16, latent_dim=16,
                             lambda_cycle=0.0, sampling={"num_queries": 32}, datasets=datasets)


def trainer(tmp_path, name, **kwargs) -> pl.Trainer:
    return short_trainer(tmp_path, name, 6, **kwargs)


def mesh_batch(counts=(50, 35), seed=0) -> dict:
    """A raw padded batch of the mesh dataset: samples of ``counts`` points, junk (not zeros) in the padding."""
    generator = torch.Generator().manual_seed(seed)
    size = max(counts)
    mask = torch.arange(size) < torch.tensor(counts)[:, None]
    fields = torch.randn(len(counts), size, 1, generator=generator)
    return {"fields": fields, "targets": torch.randn(len(counts), 1, size, 1, generator=generator),
            "coords": torch.rand(len(counts), size, 2, generator=generator), "dt": torch.full((len(counts),), 0.1),
            "mask": mask, "dataset": torch.full((len(counts),), 1)}


def test_each_dataset_gets_a_stem_of_its_kind_around_the_shared_trunk():
    module = autoencoder()
    flow, cloud = module.encoder.parts["flow"], module.encoder.parts["cloud"]
    assert isinstance(flow, GridEncoder) and isinstance(cloud, MeshEncoder)
    assert cloud.num_supernodes == 16 and cloud.radius == 0.3  # the dataset's own settings, none of the grid's
    assert flow.blocks is cloud.blocks and flow.norm is cloud.norm
    # One token per patch (a linear map) is no pooling a mesh can use: the mesh keeps its perceiver pooling.
    assert flow.pool is not cloud.pool
    assert module.decoder.parts["flow"].blocks is module.decoder.parts["cloud"].blocks
    assert module.decoder.parts["flow"].heads is not module.decoder.parts["cloud"].heads
    # Perceiver pooling on the grid: the grid and the mesh share that too.
    perceiver = autoencoder({**ENCODER, "pooling": "perceiver"})
    assert perceiver.encoder.parts["flow"].pool is perceiver.encoder.parts["cloud"].pool

    # A mesh batch: the meta follows the mesh (its mask, no grid), and its loss trains the shared trunk and the
    # mesh's stem and head, not the grid's.
    b = module.prepare_batch(mesh_batch())
    assert module.active_dataset == "cloud" and module.grid_shape is None and module.num_channels == 1
    assert set(b.meta) == {"mask"} and b.meta["mask"] is b.mask
    module.decode(module.encode(b.fields, b.coords, b.meta), b.coords).square().mean().backward()

    def grad_norm(params) -> float:
        return sum(float(p.grad.abs().sum()) for p in params if p.grad is not None)

    assert grad_norm(flow.blocks.parameters()) > 0
    assert grad_norm(cloud.field_embed.parameters()) > 0 and grad_norm(cloud.message_src.parameters()) > 0
    assert grad_norm(module.decoder.parts["cloud"].heads.parameters()) > 0
    assert grad_norm(flow.patch_embed.parameters()) == 0
    assert grad_norm(module.decoder.parts["flow"].heads.parameters()) == 0
    # ... and back on the grid, the meta names its grid and carries no mask.
    axis = torch.linspace(0, 1, 16)
    coords = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(1, -1, 2).expand(2, -1, -1)
    grid = {"fields": torch.randn(2, 256, 2), "targets": torch.randn(2, 1, 256, 2), "coords": coords,
            "dt": torch.full((2,), 0.1), "dataset": torch.zeros(2, dtype=torch.long)}
    b = module.prepare_batch(grid)
    assert module.active_dataset == "flow" and b.meta == {"grid_shape": (16, 16)}


def test_a_region_stem_shares_the_trunk_and_trains_its_own_fit_embedding():
    """A mesh dataset with ``pooling="region"`` gets a RegionEncoder stem: one token per cell like the grid's patches,
    around the same transformer trunk; its loss reaches its coefficient embedding and the trunk, not the grid's
    stem."""
    region = {"kind": "mesh", "pooling": "region", "degree": 2, "dim": 32, "depth": 1, "num_heads": 2}
    module = autoencoder(datasets={**DATASETS, "cloud": {**DATASETS["cloud"], "encoder": region}})
    flow, cloud = module.encoder.parts["flow"], module.encoder.parts["cloud"]
    assert isinstance(cloud, RegionEncoder) and cloud.degree == 2
    assert flow.blocks is cloud.blocks and flow.norm is cloud.norm
    b = module.prepare_batch(mesh_batch())
    module.decode(module.encode(b.fields, b.coords, b.meta), b.coords).square().mean().backward()
    assert float(cloud.coefficient_embed.weight.grad.abs().sum()) > 0
    assert float(next(iter(flow.blocks.parameters())).grad.abs().sum()) > 0
    assert flow.patch_embed.weight.grad is None or float(flow.patch_embed.weight.grad.abs().sum()) == 0


def test_encoder_trunks_that_cannot_be_shared_are_refused():
    with pytest.raises(ValueError, match="differ in their trunk's width"):
        autoencoder(datasets={**DATASETS, "cloud": {**DATASETS["cloud"], "encoder": {**MESH_ENCODER, "dim": 16}}})
    with pytest.raises(ValueError, match="differ in their trunk's width"):
        autoencoder(datasets={**DATASETS, "cloud": {**DATASETS["cloud"], "encoder": {**MESH_ENCODER, "depth": 2}}})


def test_grid_and_mesh_train_together_and_the_checkpoint_routes_by_dataset(datamodule, tmp_path):
    pl.seed_everything(0)
    stage1 = autoencoder()
    stems = {"flow": stage1.encoder.parts["flow"].patch_embed.weight,
             "cloud": stage1.encoder.parts["cloud"].field_embed.weight}
    untrained = {name: weight.detach().clone() for name, weight in stems.items()}
    fit1 = trainer(tmp_path, "s1")
    fit1.fit(stage1, datamodule=datamodule)
    for name, weight in stems.items():  # the training batches came from both datasets: both stems trained
        assert not torch.equal(weight, untrained[name]), name
    val1 = {k: float(v) for k, v in fit1.callback_metrics.items()}
    assert {"val/flow/nrmse", "val/cloud/nrmse", "val/nrmse"} <= set(val1)
    for name, child in datamodule.children.items():  # each normaliser holds its own training split's statistics
        torch.testing.assert_close(stage1.normalizer.parts[name].field_mean, child.stats["field_mean"])
    fit1.save_checkpoint(tmp_path / "ae.ckpt", weights_only=True)

    stage2 = OperatorModule(autoencoder_ckpt=str(tmp_path / "ae.ckpt"), operator=OPERATOR,
                            sampling={"num_queries": 32}, optim={"lr": 1e-3},
                            loss={"inverse_loss_frequency": 1, "inverse_loss_warmup_epochs": 0})
    assert stage2.operator.num_datasets == 2 and isinstance(stage2.encoder.parts["cloud"], MeshEncoder)
    before = {k: v.clone() for k, v in stage2.operator.state_dict().items()}
    fit2 = trainer(tmp_path, "s2")
    fit2.fit(stage2, datamodule=datamodule)
    assert any(not torch.equal(v, before[k]) for k, v in stage2.operator.state_dict().items())
    val2 = {k: float(v) for k, v in fit2.callback_metrics.items()}
    for key in ("nrmse", "rollout_nrmse_h3"):
        assert np.isfinite(val2[f"val/flow/{key}"]) and np.isfinite(val2[f"val/cloud/{key}"])
        assert val2[f"val/{key}"] == pytest.approx((val2[f"val/flow/{key}"] + val2[f"val/cloud/{key}"]) / 2, rel=1e-5)
    metrics = {k.split("/dataloader_idx_")[0]: float(v)
               for result in fit2.test(stage2, datamodule=datamodule, verbose=False) for k, v in result.items()}
    assert {"test/flow/nrmse", "test/cloud/nrmse", "test/cloud/nrmse/p", "test/flow/nrmse/u"} <= set(metrics)
    assert "test/cloud/brmse" not in metrics and "test/flow/brmse" in metrics  # grid-only metrics stay the grid's

    fit2.save_checkpoint(tmp_path / "op.ckpt", weights_only=True)
    model = UPT.from_checkpoint(tmp_path / "op.ckpt")
    stage2.eval()
    for name in ("cloud", "flow", "cloud"):
        batch = next(iter(datamodule.children[name].test_dataloader()[1]))
        args = (batch["fields"], batch["coords"], 3)
        kwargs = {"dt": batch["dt"], "mask": batch.get("mask"), "dataset": name}
        assert (name == "cloud") == ("mask" in batch)
        got = model.rollout(*args, **kwargs)
        assert got.shape == (batch["fields"].shape[0], 3, *batch["fields"].shape[1:])
        torch.testing.assert_close(got, stage2.rollout(*args, **kwargs), rtol=1e-5, atol=1e-5)
        assert model.grid_shape == (None if name == "cloud" else (16, 16))
        assert set(model.meta(batch.get("mask"))) == ({"mask"} if name == "cloud" else {"grid_shape"})

    # The mesh's predictions do not depend on its padding: each sample alone, unpadded, predicts what it
    # predicted in its padded batch, and junk written into the padding changes nothing.
    batch = next(iter(datamodule.children["cloud"].test_dataloader()[1]))
    mask = batch["mask"]
    assert not mask.all(), "the test meshes have different point counts, so their batch is padded"
    padded = model.rollout(batch["fields"], batch["coords"], 3, dt=batch["dt"], mask=mask, dataset="cloud")
    junk = batch["fields"].masked_fill(~mask[..., None], 1e3)
    junk_coords = batch["coords"].masked_fill(~mask[..., None], 7.0)
    real = mask[:, None, :, None].expand_as(padded)
    torch.testing.assert_close(model.rollout(junk, junk_coords, 3, dt=batch["dt"], mask=mask, dataset="cloud")[real],
                               padded[real])
    for row in range(mask.shape[0]):
        valid = mask[row]
        alone = model.rollout(batch["fields"][row : row + 1, valid], batch["coords"][row : row + 1, valid], 3,
                              dt=batch["dt"][row : row + 1], dataset="cloud")
        torch.testing.assert_close(alone[0], padded[row][:, valid], rtol=1e-5, atol=1e-5)
