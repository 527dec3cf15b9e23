"""The loss, sampling and optimiser settings as objects: one owner of each default, Hydra's instantiate builds them
for the modules, checkpoints store them as plain mappings, and checkpoints of the flat earlier layout load alike."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir

from helpers.modules import TINY_OPERATOR, grid_coords, loader, make_trainer, travelling_waves
from upt_lightning.baselines import FNOModule
from upt_lightning.cli import checkpoint_init_args
from upt_lightning.errors import ConfigError
from upt_lightning.losses import OperatorLoss
from upt_lightning.modules import AutoencoderModule, OperatorModule
from upt_lightning.modules.optim import OptimSettings
from upt_lightning.pipeline.settings import build_settings, loss_of, optim_of, sampling_of
from upt_lightning.query_sampling import QuerySampling
from upt_lightning.runtime.legacy_hparams import LEGACY_KEYS, legacy_init_arguments

CONF = Path(__file__).resolve().parents[2] / "conf"


def _yaml(path: str) -> dict:
    values = yaml.safe_load((CONF / path).read_text())
    values.pop("_target_")
    return values


@pytest.mark.parametrize("path, cls, omitted", [
    ("loss/default.yaml", OperatorLoss, ()),
    ("optim/adamw_cosine.yaml", OptimSettings, ("lr", "muon_lr_ratio")),  # each stage gives its rate; no Muon
    ("sampling/dense.yaml", QuerySampling, ()),
])
def test_default_config_groups_restate_the_owning_class_defaults(path, cls, omitted):
    """The class owns each default; the default config group shows the same values (and only known keys)."""
    defaults = {k: v for k, v in cls().as_dict().items() if k not in omitted}
    assert _yaml(path) == defaults


def test_no_module_constructor_takes_more_than_thirteen_arguments():
    for cls in (AutoencoderModule, OperatorModule, FNOModule, OperatorLoss, OptimSettings):
        names = [n for n in inspect.signature(cls.__init__).parameters if n != "self"]
        assert len(names) <= 13, (cls.__name__, len(names))


def test_hydra_instantiates_the_objects_from_the_composed_config():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["+experiment=burgers_upt", "loss.lambda_rollout=0.2", "sampling=stratified"])
    loss, sampling, optim = loss_of(cfg), sampling_of(cfg), optim_of(cfg, cfg.stage2.lr)
    assert isinstance(loss, OperatorLoss) and loss.base["lambda_rollout"] == 0.2
    assert sampling == QuerySampling(num_queries=cfg.sampling.num_queries, strategy="stratified", per_sample=True)
    assert optim.lr == cfg.stage2.lr and optim.optimizer == cfg.optim.optimizer and isinstance(optim.betas, tuple)


def test_an_impossible_or_unknown_setting_is_a_config_error_naming_the_key():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["sampling.num_queries=0", "+optim.momentum=0.9", "loss.lambda_inv_enc=0.2"])
    with pytest.raises(ConfigError, match=r"sampling.num_queries must be a positive integer, got 0"):
        sampling_of(cfg)
    with pytest.raises(ConfigError, match=r"optim.momentum is not a setting of OptimSettings"):
        optim_of(cfg, 1e-3)
    with pytest.raises(ConfigError, match=r"loss.lambda_inv_enc=0.2 exceeds loss.inverse_loss_max_weight=0.05"):
        loss_of(cfg)
    cfg.loss._target_ = "upt_lightning.query_sampling.QuerySampling"
    with pytest.raises(ConfigError, match=r"loss.inverse_loss_frequency is not a setting of QuerySampling"):
        build_settings(cfg, "loss", OperatorLoss)
    cfg.loss._target_ = "argparse.Namespace"  # takes any keyword, builds the wrong thing
    with pytest.raises(ConfigError, match=r"loss._target_=argparse.Namespace builds a Namespace, not a OperatorLoss"):
        build_settings(cfg, "loss", OperatorLoss)


def _flat(hparams: dict) -> dict:
    """The hyperparameters as the earlier version wrote them: every setting of the groups at the top level."""
    flat = {k: v for k, v in hparams.items() if k not in ("loss", "sampling", "optim")}
    for old, (group, key) in LEGACY_KEYS.items():
        if key in (hparams.get(group) or {}):
            flat[old] = hparams[group][key]
    if isinstance(flat.get("autoencoder"), dict) and "source" in flat["autoencoder"]:
        flat["autoencoder"] = {k: v for k, v in flat["autoencoder"].items() if k != "source"}
        flat["autoencoder_source"] = hparams["autoencoder"]["source"]
    return flat


@pytest.mark.parametrize("stage", ["autoencoder", "operator"])
def test_checkpoints_of_the_flat_layout_load_with_the_same_settings_and_predictions(stage, autoencoder_ckpt, tmp_path):
    if stage == "autoencoder":
        module = AutoencoderModule.load_from_checkpoint(autoencoder_ckpt, weights_only=True)
    else:
        module = OperatorModule(autoencoder_ckpt=str(autoencoder_ckpt), operator=TINY_OPERATOR,
                                loss={"lambda_rollout": 0.3, "inverse_loss_frequency": 2},
                                sampling={"num_queries": 24, "strategy": "stratified"},
                                optim={"lr": 3e-3, "optimizer": "muon", "muon_lr_ratio": 2.0}, seed=3)
        make_trainer(max_epochs=1, limit_train_batches=2).fit(module, loader(horizon=2))
    fresh = tmp_path / "fresh.ckpt"
    trainer = make_trainer()
    trainer.strategy.connect(module)
    trainer.save_checkpoint(fresh)
    checkpoint = torch.load(fresh, weights_only=True)
    checkpoint["hyper_parameters"] = _flat(checkpoint["hyper_parameters"])
    assert "sampling" not in checkpoint["hyper_parameters"] and "lr" in checkpoint["hyper_parameters"]
    legacy = tmp_path / "legacy.ckpt"
    torch.save(checkpoint, legacy)

    loaded = type(module).load_from_checkpoint(legacy, weights_only=True)
    assert dict(loaded.hparams) == dict(module.hparams)
    assert loaded.sampling == module.sampling and loaded.optim_settings == module.optim_settings
    if stage == "operator":
        assert loaded.operator_loss.as_dict() == module.operator_loss.as_dict()
        assert loaded.hparams.autoencoder["source"] == str(autoencoder_ckpt)
    fields = travelling_waves(2, 1)[:, 0]
    coords = grid_coords().expand(2, -1, -1)
    with torch.no_grad():
        if stage == "operator":
            expected, got = module.eval().rollout(fields, coords, 2), loaded.eval().rollout(fields, coords, 2)
        else:
            expected, got = module.eval()(fields, coords), loaded.eval()(fields, coords)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    # `upt validate/test --ckpt_path` parses the same grouped arguments
    init_args = checkpoint_init_args(legacy)["dict_kwargs"]
    assert {key: init_args[key] for key in ("sampling", "optim")} == {"sampling": module.hparams.sampling,
                                                                      "optim": module.hparams.optim}
    assert "lr" not in init_args and "autoencoder_source" not in init_args


def test_checkpoints_of_this_layout_need_no_regrouping(autoencoder_ckpt):
    hparams = torch.load(autoencoder_ckpt, weights_only=True)["hyper_parameters"]
    assert "sampling" in hparams and legacy_init_arguments(hparams) == {}


def test_a_run_saved_before_the_groups_named_their_class_resumes():
    from upt_lightning.pipeline.resume import config_differences

    current = {"seed": 0, "loss": {"_target_": "upt_lightning.losses.OperatorLoss", "lambda_inv_enc": 0.01},
               "sampling": {"_target_": "upt_lightning.query_sampling.QuerySampling", "num_queries": 64}}
    saved = {"seed": 0, "loss": {"lambda_inv_enc": 0.01}, "sampling": {"num_queries": 64}}
    assert config_differences(saved, current) == []
    saved["loss"]["_target_"] = "mypackage.MyLoss"  # another class is another run
    assert config_differences(saved, current) == [
        "loss._target_: 'mypackage.MyLoss' -> 'upt_lightning.losses.OperatorLoss'"]


def test_an_earlier_weight_above_its_cap_is_read_as_the_curriculum_trained_it():
    """Earlier versions accepted a scheduled weight above the cap and trained with the cap; the loss now refuses
    the pair, so such a checkpoint's weight is read capped."""
    loss = legacy_init_arguments({"lambda_inv_enc": 0.5, "lambda_inv_dec": 0.01, "inverse_loss_max_weight": 0.05,
                                  "use_inverse_losses": True})["loss"]
    assert loss["lambda_inv_enc"] == 0.05 and loss["lambda_inv_dec"] == 0.01
    assert OperatorLoss(**loss).base["lambda_inv_enc"] == 0.05
