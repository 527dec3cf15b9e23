"""The FNO baseline module: it learns next-step dynamics from the pipeline's batches, reports UPT's metrics,
predicts a 2x finer grid with the same weights, and its checkpoints load with weights_only=True."""

from __future__ import annotations

import importlib.util
import math

import lightning.pytorch as pl
import pytest
import torch

from helpers.entry import compose_train, tiny_overrides
from upt_lightning.baselines import FNOModule
from upt_lightning.baselines.grid_layout import fourier_resample, grid_axes
from upt_lightning.errors import CheckpointError
from upt_lightning.runtime.checkpoints import checkpoint_kind, read_checkpoint
from upt_lightning.pipeline.baseline import build_baseline_module
from upt_lightning.pipeline.resume import check_resume
from upt_lightning.pipeline.run import build_datamodule
from upt_lightning.pipeline.superres import superres_metrics

# Checked without importing neuralop: an import at collection would leave its global warning filter behind.
needs_neuralop = pytest.mark.skipif(importlib.util.find_spec("neuralop") is None,
                                    reason='the FNO baseline needs neuraloperator: pip install -e ".[baselines]"')

QUIET = dict(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
             enable_model_summary=False)
SHOWN = ("nrmse", "persistence_nrmse", "rollout_nrmse_h3", "persistence_rollout_nrmse_h3")


def _evaluate(run, model, datamodule, stage: str) -> dict[str, float]:
    results = getattr(pl.Trainer(**QUIET), run)(model, datamodule=datamodule, verbose=False)
    merged = {key.split("/dataloader_idx")[0]: value for loader in results for key, value in loader.items()}
    return {name: merged[f"{stage}/{name}"] for name in SHOWN}


def _batch_loss(model: FNOModule, batch) -> float:
    with torch.no_grad():
        b = model.prepare_batch(batch)
        return float(torch.nn.functional.mse_loss(model.predict_next_normalised(b), b.targets[:, 0]))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """An FNO (width 16, 8 modes) fitted for 4 epochs of 14 batches on 8 tiny Burgers trajectories (16x16)."""
    folder = tmp_path_factory.mktemp("fno")
    cfg = compose_train([*tiny_overrides("burgers_fno", folder / "data"), "model.hidden_channels=16", "stage2.lr=3e-3"])
    datamodule = build_datamodule(cfg)
    pl.seed_everything(0)
    model = build_baseline_module(cfg, datamodule)
    before = _evaluate("validate", model, datamodule, "val")  # setup() takes the normalisation statistics
    batch = next(iter(datamodule.train_dataloader()))
    loss_before = _batch_loss(model, batch)
    trainer = pl.Trainer(max_epochs=4, num_sanity_val_steps=0, limit_val_batches=0, **QUIET)
    trainer.fit(model, datamodule=datamodule)
    path = folder / "fno.ckpt"
    trainer.save_checkpoint(path)
    return {"cfg": cfg, "datamodule": datamodule, "model": model, "before": before, "after":
            _evaluate("validate", model, datamodule, "val"), "loss": (loss_before, _batch_loss(model, batch)),
            "steps": trainer.global_step, "ckpt": path}


@needs_neuralop
def test_a_few_dozen_steps_learn_the_dynamics(trained):
    before, after = trained["before"], trained["after"]
    assert 40 <= trained["steps"] <= 60
    loss_before, loss_after = trained["loss"]
    assert loss_after < 0.5 * loss_before, trained["loss"]
    # Before training the random FNO adds noise to persistence; after, it beats persistence one step ahead
    # and over the 3-step rollout.
    assert after["nrmse"] < 0.6 * before["nrmse"], (before, after)
    assert after["nrmse"] < 0.9 * after["persistence_nrmse"], after
    assert after["rollout_nrmse_h3"] < 0.9 * after["persistence_rollout_nrmse_h3"], after
    assert after["persistence_nrmse"] == pytest.approx(before["persistence_nrmse"])  # same data, same baseline


@needs_neuralop
def test_the_same_weights_predict_the_2x_finer_grid(trained):
    cfg, datamodule, model = trained["cfg"], trained["datamodule"], trained["model"]
    coarse = _evaluate("test", model, datamodule, "test")
    fine = superres_metrics(cfg, model, datamodule)
    assert fine["superres/grid"] == "32x32"
    for k in (1, 2, 3):
        assert math.isfinite(fine[f"superres/rollout_nrmse_h{k}"]) and 0 < fine[f"superres/rollout_nrmse_h{k}"] < 1
    # The finer truth holds the same band-limited fields: the error stays that of the coarse grid.
    assert fine["superres/rollout_nrmse_h3"] == pytest.approx(coarse["rollout_nrmse_h3"], rel=0.1)
    assert fine["superres/rollout_nrmse_h3"] < coarse["persistence_rollout_nrmse_h3"]


@needs_neuralop
def test_the_checkpoint_loads_with_weights_only_and_predicts_the_same(trained):
    path, model = trained["ckpt"], trained["model"]
    checkpoint = read_checkpoint(path)  # weights_only=True: neuralop's "_metadata" (functions) must not be there
    assert checkpoint_kind(checkpoint) == "fno" and "_metadata" not in checkpoint["state_dict"]
    loaded = FNOModule.load_from_checkpoint(path, weights_only=True).eval()
    batch = next(iter(trained["datamodule"].test_dataloader()[1]))
    expected = model.eval().rollout(batch["fields"], batch["coords"], 3)
    torch.testing.assert_close(loaded.rollout(batch["fields"], batch["coords"], 3, dt=batch["dt"]), expected)
    assert expected.shape == batch["targets"].shape
    # decode_steps: the order asked for, like OperatorModule.rollout; repeats and steps past the end refused.
    torch.testing.assert_close(loaded.rollout(batch["fields"], batch["coords"], 3, decode_steps=[3, 1]),
                               expected[:, [2, 0]])
    with pytest.raises(ValueError, match="more than once"):
        loaded.rollout(batch["fields"], batch["coords"], 3, decode_steps=[2, 2])
    with pytest.raises(ValueError, match="outside 1..3"):
        loaded.rollout(batch["fields"], batch["coords"], 3, decode_steps=[4])


@needs_neuralop
def test_what_an_fno_cannot_read_is_refused_by_name(trained):
    model, datamodule = trained["model"], trained["datamodule"]
    batch = next(iter(datamodule.test_dataloader()[0]))
    with pytest.raises(ValueError, match="mesh batch"):
        model.prepare_batch({**batch, "mask": torch.ones(batch["fields"].shape[:2], dtype=torch.bool)})
    with pytest.raises(ValueError, match="one training frame"):
        model.rollout(batch["fields"], batch["coords"], 2, dt=2 * datamodule.dt)
    scattered = batch["coords"][:, torch.randperm(batch["coords"].shape[1])]
    with pytest.raises(ValueError, match="query_points must list the points of one regular grid"):
        model.rollout(batch["fields"], batch["coords"], 1, query_points=scattered)
    with pytest.raises(ValueError, match="n_modes=32 on grid axis 0 exceeds its 16 points"):
        FNOModule({"u": 1, "v": 1}, (16, 16), n_modes=32)
    with pytest.raises(ValueError, match="grid data"):
        FNOModule({"u": 1}, None)


def test_fourier_resampling_is_exact_for_band_limited_periodic_fields():
    def cell_centres(n):
        return (torch.arange(n, dtype=torch.float32) + 0.5) / n

    def field(points):
        x, y = points[..., 0], points[..., 1]
        # Wavenumbers up to 7, below the Nyquist wavenumber 7.5 of the coarsest grid (15 points).
        return torch.sin(6 * math.pi * x) + torch.cos(2 * math.pi * (2 * x + 5 * y)) + 0.3 * torch.cos(14 * math.pi * y)

    for coarse, fine in ((16, 32), (15, 30), (16, 48)):
        grids = [torch.stack(torch.meshgrid(cell_centres(n), cell_centres(n), indexing="ij"), -1)
                 for n in (coarse, fine)]
        points = [grid.reshape(1, -1, 2) for grid in grids]
        out = fourier_resample(field(grids[0])[None, None], grid_axes(points[0], "coords"),
                               grid_axes(points[1], "query_points"))
        torch.testing.assert_close(out[0, 0], field(grids[1]), atol=2e-5, rtol=0)


@needs_neuralop
def test_resume_from_a_path_takes_an_fno_checkpoint_of_the_configured_size_only(trained):
    path = trained["ckpt"]  # trained with model.hidden_channels=16
    run_dir = path.parent / "resumed_run"
    check_resume(compose_train([*tiny_overrides("burgers_fno", "data"), "model.hidden_channels=16",
                                f"resume={path}"]), run_dir)
    with pytest.raises(CheckpointError, match=r"another model size \(model\.hidden_channels: checkpoint 16, config 8"):
        check_resume(compose_train([*tiny_overrides("burgers_fno", "data"), f"resume={path}"]), run_dir)
    with pytest.raises(CheckpointError, match=r"is not a stage-2 \(OperatorModule\) checkpoint: found an FNO baseline"):
        check_resume(compose_train([*tiny_overrides("burgers_upt", "data"), f"resume={path}"]), run_dir)
