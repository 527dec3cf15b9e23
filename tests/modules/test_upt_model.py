"""``UPT.from_checkpoint``: the trained surrogate out of a stage-2 checkpoint, without Lightning, predicting what
the training module predicts."""

import subprocess
import sys
import textwrap

import pytest
import torch

from helpers.modules import TINY_OPERATOR, grid_coords, loader, make_trainer, travelling_waves
from upt_lightning.models import UPT
from upt_lightning.modules import OperatorModule

STATS = {
    "field_mean": torch.tensor([0.3, -0.2]),
    "field_std": torch.tensor([2.0, 0.5]),
    "coord_min": torch.tensor([0.0, 0.0]),
    "coord_max": torch.tensor([1.0, 1.0]),
}
REFINEMENT = {"steps": 3, "lr": 0.15, "points": 16, "rate": "residual", "carry": 0.7}


@pytest.fixture(scope="module")
def stage2_ckpt(autoencoder_ckpt, tmp_path_factory):
    """A stage-2 checkpoint from a real (very short) fit, with inference refinement, and its module."""
    model = OperatorModule(autoencoder_ckpt=str(autoencoder_ckpt), operator=TINY_OPERATOR,
                           inference_refinement=REFINEMENT)
    model.normalizer.set_stats(STATS, dt=0.1)
    trainer = make_trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=0)
    trainer.fit(model, train_dataloaders=loader())
    path = tmp_path_factory.mktemp("stage2") / "operator.ckpt"
    trainer.save_checkpoint(path)
    return path, model.eval()


def inputs(batch=2):
    return travelling_waves(batch, 1, seed=3)[:, 0], grid_coords().expand(batch, -1, -1)


@pytest.mark.parametrize("mode", ["latent", "physical"])
def test_from_checkpoint_predicts_what_the_module_predicts(stage2_ckpt, mode):
    path, module = stage2_ckpt
    model = UPT.from_checkpoint(path)
    assert not model.training and model.inference_refinement["carry"] == 0.7
    fields, coords = inputs()
    expected = module.rollout(fields, coords, steps=4, mode=mode)
    got = model.rollout(fields, coords, steps=4, mode=mode)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    # Any points, some steps: the same decoder at a finer grid.
    fine = grid_coords((16, 16)).expand(2, -1, -1)
    torch.testing.assert_close(model.rollout(fields, coords, steps=4, mode=mode, points=fine, decode_steps=[4, 2]),
                               module.rollout(fields, coords, steps=4, mode=mode, query_points=fine,
                                              decode_steps=[4, 2]), rtol=0, atol=0)
    torch.testing.assert_close(model(fields, coords), module(fields, coords), rtol=0, atol=0)


def test_the_carried_correction_changes_the_prediction(stage2_ckpt):
    """Refinement is part of the loaded model: without it the first step differs (the test above would
    otherwise pass for a model that dropped it on both sides)."""
    path, _ = stage2_ckpt
    model = UPT.from_checkpoint(path)
    fields, coords = inputs()
    refined = model.rollout(fields, coords, steps=2)
    model.inference_refinement = None
    plain = model.rollout(fields, coords, steps=2)
    assert (refined[:, 0] - plain[:, 0]).abs().max() > 1e-6


def test_loading_and_predicting_import_no_lightning(stage2_ckpt, tmp_path):
    path, module = stage2_ckpt
    fields, coords = inputs()
    torch.save({"fields": fields, "coords": coords, "expected": module.rollout(fields, coords, steps=10)},
               tmp_path / "case.pt")
    code = textwrap.dedent(f"""
        import sys, torch
        from upt_lightning.models import UPT
        case = torch.load({str(tmp_path / "case.pt")!r})
        model = UPT.from_checkpoint({str(path)!r})
        pred = model.rollout(case["fields"], case["coords"], steps=10)
        assert pred.shape == (2, 10, 64, 2), pred.shape
        torch.testing.assert_close(pred, case["expected"], rtol=0, atol=0)
        loaded = sorted(m for m in sys.modules if m == "lightning" or m.startswith(("lightning.", "pytorch_lightning")))
        assert not loaded, loaded
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_from_checkpoint_refuses_a_stage1_checkpoint(autoencoder_ckpt):
    with pytest.raises(ValueError, match="stage-1.*UPT.from_checkpoint needs a stage-2"):
        UPT.from_checkpoint(autoencoder_ckpt)


def test_rollout_checks_its_arguments(stage2_ckpt):
    model = UPT.from_checkpoint(stage2_ckpt[0])
    fields, coords = inputs()
    with pytest.raises(ValueError, match="mode='spectral' is unknown"):
        model.rollout(fields, coords, steps=2, mode="spectral")
    with pytest.raises(ValueError, match="steps must be >= 1"):
        model.rollout(fields, coords, steps=0)
    with pytest.raises(ValueError, match="trained on one dataset"):
        model.rollout(fields, coords, steps=1, dataset="burgers")
