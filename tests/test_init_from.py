"""init_from: a new run starts from a trained model's weights (models/init_from.py, pipeline/init_from.py).

The matching rules on tiny modules (same fields, new fields, a multi-dataset checkpoint, a shape mismatch), the
trunk freezing, the config checks, then one tiny pretraining in-process on Navier-Stokes (field w) and the
fine-tuning experiment (u, v) through train.py and through `upt fit`: trunks loaded (and frozen for the one epoch,
so equal to the checkpoint's), stems fresh, and the result loads and rolls out like any checkpoint.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from helpers.entry import REPO, compose_train, run_train, tiny_overrides
from upt_lightning.callbacks import FreezeTrunk
from upt_lightning.data.writers import PDEBench2DWriter
from upt_lightning.errors import CheckpointError, ConfigError
from upt_lightning.modules import OperatorModule
from upt_lightning.pipeline import run_experiment
from upt_lightning.pipeline.config_checks import check_config
from upt_lightning.pipeline.stage1 import stage1_key
from upt_lightning.models.init_from import (
    DATASET_EMBED,
    in_frozen_trunk,
    match_datasets,
    module_fields,
    plan_init,
    role_of,
    split_key,
)

GRID = [16, 16]
ENCODER = {"kind": "grid", "patch_size": 8, "dim": 32, "depth": 1, "num_heads": 2}
DECODER = {"dim": 32, "depth": 1, "num_heads": 2, "num_frequencies": 3, "learned_locality": True}


def operator_module(fields=None, datasets=None, dim=32, seed=0) -> OperatorModule:
    """A tiny untrained stage-2 module (its own stage 1), every weight drawn at random."""
    torch.manual_seed(seed)
    arch = dict(field_channels=fields or {"u": 1, "v": 1}, coord_dim=2, grid_shape=GRID,
                encoder={**ENCODER, "dim": dim}, decoder=DECODER, latent_tokens=8, latent_dim=16, datasets=datasets)
    module = OperatorModule(autoencoder=arch, operator={"dim": 32, "depth": 1, "num_heads": 2},
                            freeze_autoencoder=False)
    with torch.no_grad():  # random, not the zero-initialised gates: a copied tensor is told from a fresh one
        for value in module.state_dict().values():
            if value.is_floating_point():
                value.normal_()
    return module


def plan(target, checkpoint, parts=("normalizer", "encoder", "decoder", "operator")):
    match = match_datasets(module_fields(target), module_fields(checkpoint))
    return plan_init(target.state_dict(), checkpoint.state_dict(), match, parts)


def roles(state):
    return {key: role_of(*split_key(key)[::2]) for key in state}


MULTI = {"burgers": {"field_channels": {"u": 1, "v": 1}, "grid_shape": GRID},
         "ns2d": {"field_channels": {"w": 1}, "grid_shape": GRID}}


def test_same_fields_load_every_tensor_with_the_checkpoint_values():
    checkpoint, target = operator_module(seed=1), operator_module(seed=2)
    result = plan(target, checkpoint)
    assert not result.fresh and set(result.loaded) == set(target.state_dict())
    target.load_state_dict(result.state)
    for key, value in checkpoint.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key
    assert "freshly initialised: nothing" in result.summary()


def test_new_field_names_keep_stems_and_heads_fresh_and_load_the_trunks():
    checkpoint, target = operator_module(seed=1), operator_module(fields={"a": 1, "b": 1, "c": 1}, seed=2)
    result = plan(target, checkpoint)
    kinds = roles(target.state_dict())
    assert set(result.fresh) == {key for key, role in kinds.items() if role == "stem"}
    assert {key.split(".")[0] for key in result.fresh} == {"normalizer", "encoder", "decoder"}
    assert "encoder.patch_embed.weight" in result.fresh and "decoder.heads.2.weight" in result.fresh
    assert "decoder.locality_log_scale" in result.fresh
    assert all(torch.equal(result.state[key], checkpoint.state_dict()[key]) for key in result.loaded)
    assert {key.split(".")[0] for key in result.loaded} == {"encoder", "decoder", "operator"}
    assert "freshly initialised: normaliser, encoder stem, decoder heads (no checkpoint dataset" in result.summary()


def test_a_multi_dataset_checkpoint_gives_the_stems_of_the_dataset_with_the_same_fields():
    checkpoint = operator_module(datasets=MULTI, seed=1)
    target = operator_module(fields={"w": 1}, seed=2)
    result = plan(target, checkpoint)
    assert not result.fresh
    saved = checkpoint.state_dict()
    assert torch.equal(result.state["encoder.patch_embed.weight"], saved["encoder.parts.ns2d.patch_embed.weight"])
    assert torch.equal(result.state["normalizer.field_std"], saved["normalizer.parts.ns2d.field_std"])
    assert torch.equal(result.state["decoder.heads.0.bias"], saved["decoder.parts.ns2d.heads.0.bias"])
    assert torch.equal(result.state["encoder.norm.weight"], saved["encoder.parts.ns2d.norm.weight"])  # the shared trunk
    assert "those of the checkpoint's dataset 'ns2d'" in result.summary()
    # The one-dataset operator conditions as the checkpoint's did on ns2d: its embedding row is folded in.
    target.load_state_dict(result.state)
    z, dt = torch.randn(2, 8, 16), torch.tensor([1.0, 0.5])
    with torch.no_grad():
        folded, conditioned = target.operator(z, dt), checkpoint.operator(z, dt, dataset=1)
    assert (folded - conditioned).abs().max() < 1e-5 * conditioned.abs().max()  # float32 sums in another order
    # No dataset with the target's fields: only the trunks (and the operator without any dataset's row).
    other = plan(operator_module(fields={"p": 1}, seed=3), checkpoint)
    assert {key.split(".")[0] for key in other.fresh} == {"normalizer", "encoder", "decoder"}
    assert "per-dataset conditioning left out" in other.summary()


def test_a_multi_dataset_target_maps_each_dataset_and_its_conditioning_row():
    checkpoint = operator_module(datasets=MULTI, seed=1)
    swapped = {"ns2d": MULTI["ns2d"], "other": {"field_channels": {"q": 1}, "grid_shape": GRID}}
    target = operator_module(datasets=swapped, seed=2)
    fresh_rows = target.state_dict()[DATASET_EMBED].clone()
    result = plan(target, checkpoint)
    rows = result.state[DATASET_EMBED]
    assert torch.equal(rows[0], checkpoint.state_dict()[DATASET_EMBED][1]) and torch.equal(rows[1], fresh_rows[1])
    assert "encoder.parts.other.patch_embed.weight" in result.fresh
    assert torch.equal(result.state["encoder.parts.ns2d.patch_embed.weight"],
                       checkpoint.state_dict()["encoder.parts.ns2d.patch_embed.weight"])


def test_a_trunk_of_another_width_is_an_error_naming_the_tensor_both_shapes_and_the_fix():
    checkpoint, target = operator_module(seed=1), operator_module(fields={"a": 1}, dim=64, seed=2)
    with pytest.raises(CheckpointError) as error:
        plan(target, checkpoint)
    message = str(error.value)
    assert "encoder.blocks.0." in message or "encoder.norm." in message or "encoder.pool." in message
    assert "(64" in message and "(32" in message and "model=" in message and "drop init_from" in message


def test_trunk_freezing_follows_the_epoch_and_spares_stems_heads_and_the_operator_projections():
    module = operator_module()
    assert in_frozen_trunk("encoder.blocks.0.mlp.net.0.weight") and in_frozen_trunk("decoder.parts.a.latent_proj.bias")
    assert in_frozen_trunk("operator.blocks.0.attn.qkv.weight")
    assert not any(in_frozen_trunk(name) for name in ("encoder.patch_embed.weight", "decoder.heads.0.weight",
                                                      "operator.in_proj.weight", "operator.dt_embed.0.weight"))
    callback = FreezeTrunk(1, ("operator",))
    for epoch, frozen in ((0, True), (1, False)):
        callback.on_train_epoch_start(SimpleNamespace(current_epoch=epoch), module)
        params = dict(module.named_parameters())
        assert all(params[n].requires_grad != frozen for n in params if n.startswith("operator.blocks."))
        assert params["operator.in_proj.weight"].requires_grad and params["encoder.norm.weight"].requires_grad


def test_config_checks_refuse_a_missing_or_foreign_init_from_before_training(tmp_path):
    base = tiny_overrides("burgers_upt", tmp_path / "data")
    with pytest.raises(FileNotFoundError, match="init_from=.*missing.ckpt does not exist"):
        check_config(compose_train([*base, f"init_from={tmp_path / 'missing.ckpt'}"]))
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"n_modes": 8, "hidden_channels": 8}}, foreign)
    with pytest.raises(CheckpointError, match="is an FNO baseline checkpoint; init_from takes a UPT checkpoint"):
        check_config(compose_train([*base, f"init_from={foreign}"]))
    with pytest.raises(ConfigError, match="init_from_freeze_epochs=2 freezes the trunks that init_from loads"):
        check_config(compose_train([*base, "init_from_freeze_epochs=2"]))


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A tiny Navier-Stokes UPT (field w), trained one batch per stage in-process: its stage-2 checkpoint."""
    root = tmp_path_factory.mktemp("pretrain")
    cfg = compose_train([*tiny_overrides("ns2d_upt", root / "data"), "+trainer.fast_dev_run=true",
                         "evaluate.plots=false", "evaluate.superres=false", f"+run_dir={root / 'run'}"])
    return run_experiment(cfg)["operator_ckpt"]


def test_the_stage1_cache_key_names_the_init_checkpoint(pretrained, tmp_path):
    cfg = compose_train(tiny_overrides("finetune_upt", tmp_path / "data"))
    scratch = stage1_key(cfg, None)
    assert stage1_key(compose_train([*tiny_overrides("finetune_upt", tmp_path / "data"),
                                     f"init_from={pretrained}"]), None) != scratch


def test_finetuning_through_train_py_loads_the_trunks_and_the_result_loads_and_rolls_out(pretrained, tmp_path):
    run_dir = tmp_path / "run"
    done = run_train([*tiny_overrides("finetune_upt", tmp_path / "data"), f"init_from={pretrained}",
                      "init_from_freeze_epochs=1", "evaluate.plots=false", f"hydra.run.dir={run_dir}"])
    assert done.returncode == 0, done.stderr[-3000:]
    log = (run_dir / "train.log").read_text()
    assert "this run's fields ['u', 'v'] match none of the checkpoint's (['w'])" in log
    assert "loaded: encoder trunk, decoder trunk, operator" in log
    assert "freshly initialised: normaliser, encoder stem, decoder heads" in log
    results = json.loads((run_dir / "results.json").read_text())
    assert results["init_from"] == str(pretrained)
    old = torch.load(pretrained, weights_only=True)["state_dict"]
    stage1 = torch.load(results["autoencoder_ckpt"], weights_only=True)["state_dict"]
    stage2 = torch.load(results["operator_ckpt"], weights_only=True)["state_dict"]
    # One epoch with the trunks frozen: they are still the checkpoint's, while the fresh stems trained.
    trunk = [key for key in stage1 if key.startswith(("encoder.", "decoder.")) and in_frozen_trunk(key)]
    assert trunk and all(torch.equal(stage1[key], old[key]) for key in trunk)
    blocks = [key for key in stage2 if key.startswith("operator.blocks.")]
    assert blocks and all(torch.equal(stage2[key], old[key]) for key in blocks)
    assert stage1["encoder.patch_embed.weight"].shape != old["encoder.patch_embed.weight"].shape  # 2 fields, not 1
    assert any(not torch.equal(stage2[key], old[key]) for key in stage2
               if key.startswith("operator.") and key not in blocks)
    # A fine-tuned checkpoint is a checkpoint like any other.
    model = OperatorModule.load_from_checkpoint(results["operator_ckpt"]).eval()
    axis = (torch.arange(16) + 0.5) / 16
    coords = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), dim=-1).reshape(1, -1, 2)
    prediction = model.rollout(torch.randn(1, 256, 2) * 0.3, coords, steps=3)
    assert prediction.shape == (1, 3, 256, 2) and torch.isfinite(prediction).all()


def write_waves(path, names):
    axis = (np.arange(16) + 0.5) / 16
    x, y = np.meshgrid(axis, axis, indexing="ij")
    t = np.arange(6) * 0.1
    waves = [np.stack([np.sin(2 * np.pi * (x - s + k / 8)) * (1 + c) for s in t], axis=0)
             for k in range(8) for c in range(len(names))]
    data = np.stack(waves).reshape(8, len(names), 6, 16, 16).transpose(0, 2, 3, 4, 1).astype(np.float32)
    with PDEBench2DWriter(path, num=8, x=axis, y=axis, t=t, field_names=names) as writer:
        writer.append(data)


def test_upt_fit_takes_init_from_and_the_freezing(pretrained, tmp_path, monkeypatch):
    from upt_lightning.cli import main

    write_waves(tmp_path / "waves.h5", ["u", "v"])
    tiny = {  # conf/model/tiny.yaml, as train.py builds it on periodic data
        "trainer": {"max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1, "enable_progress_bar": False,
                    "enable_model_summary": False, "log_every_n_steps": 1},
        "model": {"init_args": {
            "encoder": {**ENCODER, "pooling": "perceiver"},
            "decoder": {"dim": 32, "depth": 1, "num_heads": 2, "num_frequencies": 3, "periodic": True,
                        "learned_locality": False},
            "latent_tokens": 8, "latent_dim": 16, "sampling": {"num_queries": 64}}},
        "data": {"init_args": {"path": "waves.h5", "batch_size": 4, "rollout_horizon": 3,
                               "split": [0.5, 0.25, 0.25]}},
    }
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(tiny))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["upt"])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["fit", "--config", str(REPO / "conf" / "cli" / "burgers_autoencoder.yaml"), "--config",
                     "tiny.yaml", f"--init_from={pretrained}", "--init_from_freeze_epochs=1"])
    assert code == 0
    last = next(line.split(": ", 1)[1] for line in out.getvalue().splitlines() if line.startswith("latest checkpoint"))
    old = torch.load(pretrained, weights_only=True)["state_dict"]
    new = torch.load(tmp_path / last, weights_only=True)["state_dict"]
    trunk = [key for key in new if in_frozen_trunk(key)]
    assert trunk and all(torch.equal(new[key], old[key]) for key in trunk)
    assert main(["validate", "--config", str(REPO / "conf" / "cli" / "burgers_autoencoder.yaml"), "--config",
                 "tiny.yaml", f"--init_from={pretrained}"]) == 2
