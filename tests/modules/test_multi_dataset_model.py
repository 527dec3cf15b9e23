"""One model over two datasets of different grids and channels: shared trunks with their own stems and heads,
the operator conditioned on the dataset, per-dataset metrics and their mean, a checkpoint round trip."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from helpers.modules import short_trainer
from upt_lightning.data import MultiDataModule
from upt_lightning.data.writers import PDEBench2DWriter
from upt_lightning.models import UPT, LatentOperator
from upt_lightning.modules import AutoencoderModule, OperatorModule

STEPS = 6
DATASETS = {
    "flow": {"field_channels": {"u": 1, "v": 1}, "grid_shape": [16, 16], "encoder": {"patch_size": 4}},
    "vort": {"field_channels": {"w": 1}, "grid_shape": [8, 8], "encoder": {"patch_size": 2}},
}
ENCODER = {"kind": "grid", "dim": 32, "depth": 1, "num_heads": 2, "pooling": "patch"}
DECODER = {"dim": 32, "depth": 1, "num_heads": 2, "num_frequencies": 3}
OPERATOR = {"dim": 32, "depth": 1, "num_heads": 2}


def write_smooth(path, trajectories, size, names, seed):
    """Travelling sine waves, another amplitude and offset per channel and file (so statistics differ)."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 1, size, endpoint=False)
    xx, yy = np.meshgrid(x, x, indexing="ij")
    data = np.empty((trajectories, STEPS, size, size, len(names)), np.float32)
    for i in range(trajectories):
        phase = rng.uniform(0, 2 * np.pi, len(names))
        for t in range(STEPS):
            for c in range(len(names)):
                data[i, t, ..., c] = (3 * seed + c) + (1 + seed) * np.sin(2 * np.pi * (xx + yy) + phase[c] - 0.3 * t)
    with PDEBench2DWriter(path, num=trajectories, x=x, y=x, t=np.arange(STEPS) * 0.1, field_names=names) as writer:
        writer.append(data)


@pytest.fixture(scope="module")
def datamodule(tmp_path_factory):
    root = tmp_path_factory.mktemp("multi_model")
    write_smooth(root / "flow.h5", 10, 16, ["u", "v"], seed=0)
    write_smooth(root / "vort.h5", 10, 8, ["w"], seed=1)
    dm = MultiDataModule({name: {"path": str(root / f"{name}.h5"), "rollout_horizon": 3} for name in DATASETS},
                         batch_size=4, seed=0)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def autoencoder() -> AutoencoderModule:
    torch.manual_seed(0)
    return AutoencoderModule({"u": 1, "v": 1}, 2, (16, 16), ENCODER, DECODER, latent_tokens=16, latent_dim=16,
                             lambda_cycle=0.0, sampling={"num_queries": 32}, datasets=DATASETS)


def trainer(tmp_path, name, **kwargs) -> pl.Trainer:
    return short_trainer(tmp_path, name, 4, **kwargs)


def grid_batch(module, name: str, batch: int = 2) -> dict:
    """A raw batch of dataset ``name`` (fields from a seeded normal, its grid's coordinates)."""
    spec = DATASETS[name]
    size = spec["grid_shape"][0]
    channels = sum(spec["field_channels"].values())
    axis = torch.linspace(0, 1, size)
    coords = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(1, -1, 2).expand(batch, -1, -1)
    generator = torch.Generator().manual_seed(len(name))
    return {"fields": torch.randn(batch, size * size, channels, generator=generator),
            "targets": torch.randn(batch, 1, size * size, channels, generator=generator),
            "coords": coords, "dt": torch.full((batch,), 0.1),
            "dataset": torch.full((batch,), list(DATASETS).index(name))}


def test_datasets_share_the_trunks_and_keep_their_stems_and_heads():
    module = autoencoder()
    flow, vort = module.encoder.parts["flow"], module.encoder.parts["vort"]
    assert flow.blocks is vort.blocks and flow.pool is vort.pool
    assert flow.patch_embed is not vort.patch_embed
    assert module.decoder.parts["flow"].blocks is module.decoder.parts["vort"].blocks
    # A loss on the vorticity data alone trains the shared trunks and vort's own stem and head, not flow's.
    b = module.prepare_batch(grid_batch(module, "vort"))
    assert module.active_dataset == "vort" and module.grid_shape == (8, 8) and module.num_channels == 1
    module.decode(module.encode(b.fields, b.coords, b.meta), b.coords).square().mean().backward()

    def grad_norm(params) -> float:
        return sum(float(p.grad.abs().sum()) for p in params if p.grad is not None)

    assert grad_norm(flow.blocks.parameters()) > 0
    assert grad_norm(vort.patch_embed.parameters()) > 0
    assert grad_norm(module.decoder.parts["vort"].heads.parameters()) > 0
    assert grad_norm(flow.patch_embed.parameters()) == 0
    assert grad_norm(module.decoder.parts["flow"].heads.parameters()) == 0
    # The parameters count the shared trunk once.
    shared = sum(p.numel() for p in flow.blocks.parameters())
    total = sum(p.numel() for p in module.parameters())
    per_dataset = sum(p.numel() for p in flow.parameters()) + sum(p.numel() for p in vort.parameters())
    assert total < per_dataset + sum(p.numel() for p in module.decoder.parameters()) - shared + 1


def test_batches_must_name_one_known_dataset():
    module = autoencoder()
    batch = grid_batch(module, "flow")
    with pytest.raises(ValueError, match="no 'dataset' entry"):
        module.prepare_batch({k: v for k, v in batch.items() if k != "dataset"})
    with pytest.raises(ValueError, match="mixes datasets"):
        module.prepare_batch({**batch, "dataset": torch.tensor([0, 1])})
    with pytest.raises(ValueError, match="out of range"):
        module.prepare_batch({**batch, "dataset": torch.tensor([2, 2])})
    with pytest.raises(ValueError, match="without '/'"):
        AutoencoderModule({"u": 1}, 2, (8, 8), ENCODER, DECODER, latent_tokens=16, latent_dim=16,
                          datasets={"a/b": DATASETS["vort"]})


def test_operator_is_conditioned_on_the_dataset():
    torch.manual_seed(0)
    operator = LatentOperator(latent_dim=8, latent_tokens=4, dim=16, depth=1, num_heads=2, num_datasets=2)
    for param in operator.parameters():  # leave the zero-initialised (identity) start
        torch.nn.init.normal_(param, std=0.2)
    z = torch.randn(3, 4, 8)
    first, second = operator(z, 1.0, dataset=0), operator(z, 1.0, dataset=torch.tensor([1, 1, 1]))
    assert (first - second).abs().max() > 1e-3
    torch.testing.assert_close(operator(z, 1.0, dataset=torch.tensor([0, 1, 0]))[1], second[1])
    with pytest.raises(ValueError, match="pass dataset="):
        operator(z, 1.0)
    with pytest.raises(ValueError, match="num_datasets=0"):
        LatentOperator(latent_dim=8, latent_tokens=4, dim=16, depth=1, num_heads=2)(z, 1.0, dataset=0)


def test_two_stages_report_each_dataset_and_round_trip_a_checkpoint(datamodule, tmp_path):
    pl.seed_everything(0)
    stage1 = autoencoder()
    trainer(tmp_path, "s1").fit(stage1, datamodule=datamodule)
    # Each dataset's normaliser took its own training split's statistics.
    for name, child in datamodule.children.items():
        torch.testing.assert_close(stage1.normalizer.parts[name].field_mean, child.stats["field_mean"])
    assert not torch.allclose(stage1.normalizer.parts["flow"].field_mean[:1],
                              stage1.normalizer.parts["vort"].field_mean)
    s1_trainer = trainer(tmp_path, "s1b")
    s1_trainer.strategy.connect(stage1)
    s1_trainer.save_checkpoint(tmp_path / "ae.ckpt", weights_only=True)

    stage2 = OperatorModule(autoencoder_ckpt=str(tmp_path / "ae.ckpt"), operator=OPERATOR,
                            sampling={"num_queries": 32}, optim={"lr": 1e-3},
                            loss={"inverse_loss_frequency": 1, "inverse_loss_warmup_epochs": 0})
    assert stage2.operator.num_datasets == 2
    fit = trainer(tmp_path, "s2")
    fit.fit(stage2, datamodule=datamodule)
    metrics = {k.split("/dataloader_idx_")[0]: float(v)
               for result in fit.test(stage2, datamodule=datamodule, verbose=False) for k, v in result.items()}
    for key in ("nrmse", "rollout_nrmse_h3", "persistence_nrmse"):
        assert f"test/flow/{key}" in metrics and f"test/vort/{key}" in metrics
        assert metrics[f"test/{key}"] == pytest.approx((metrics[f"test/flow/{key}"] + metrics[f"test/vort/{key}"]) / 2,
                                                       rel=1e-5)
    assert "test/flow/nrmse/u" in metrics and "test/vort/nrmse/w" in metrics and "test/nrmse/u" not in metrics
    # Persistence is model-free: each dataset's figure is that of its own test windows.
    assert metrics["test/flow/persistence_nrmse"] != pytest.approx(metrics["test/vort/persistence_nrmse"])

    fit.save_checkpoint(tmp_path / "op.ckpt", weights_only=True)
    loaded = OperatorModule.load_from_checkpoint(tmp_path / "op.ckpt", weights_only=True)
    assert loaded.dataset_names == ["flow", "vort"]
    stage2.eval()
    for name in ("vort", "flow"):  # raw fields of either dataset to raw predictions, from the checkpoint alone
        batch = next(iter(datamodule.children[name].test_dataloader()[1]))
        args = (batch["fields"], batch["coords"], 3)
        expected = stage2.rollout(*args, dt=batch["dt"], dataset=name)
        got = loaded.rollout(*args, dt=batch["dt"], dataset=name)
        assert got.shape == (batch["fields"].shape[0], 3, *batch["fields"].shape[1:])
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    for name in DATASETS:  # each dataset's statistics came back with the checkpoint
        torch.testing.assert_close(loaded.normalizer.parts[name].field_std, stage2.normalizer.parts[name].field_std)
    # The plain model routes by a dataset argument per call: no dataset is refused, each names its own parts.
    model = UPT.from_checkpoint(tmp_path / "op.ckpt")
    batch = next(iter(datamodule.children["vort"].test_dataloader()[1]))
    with pytest.raises(ValueError, match="pass dataset=<name>"):
        model.rollout(batch["fields"], batch["coords"], 3)
    for name in ("vort", "flow", "vort"):
        batch = next(iter(datamodule.children[name].test_dataloader()[1]))
        args = (batch["fields"], batch["coords"], 3)
        torch.testing.assert_close(model.rollout(*args, dt=batch["dt"], dataset=name),
                                   stage2.rollout(*args, dt=batch["dt"], dataset=name), rtol=1e-5, atol=1e-5)
