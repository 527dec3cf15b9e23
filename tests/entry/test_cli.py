"""The `upt` LightningCLI: both stages from conf/cli, validate/test from checkpoints, user errors.

The real conf/cli configs run with a second, tiny override config and a hand-written PDEBench
per-sample-group file (16x16 travelling waves), so each command takes about a second plus imports.
Stage 2 runs as a subprocess of the installed console script; the other commands call `main`
in-process to save the import time of a new process (seconds each). validate/test also read a
checkpoint of train.py, trained in-process on tiny generated data.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch
import yaml

from helpers.entry import compose_train, tiny_overrides
from upt_lightning import __version__
from upt_lightning.cli import main

CONF = Path(__file__).resolve().parents[2] / "conf" / "cli"
STAGE1 = CONF / "burgers_autoencoder.yaml"
STAGE2 = CONF / "burgers_upt.yaml"
RES, STEPS, TRAJECTORIES = 16, 8, 6
STAGE2_EPOCHS, TRAIN_BATCHES = 3, 2

DATA = {"init_args": {"path": "tiny.h5", "batch_size": 4, "rollout_horizon": 3, "split": [0.5, 0.25, 0.25]}}
QUIET = {"enable_progress_bar": False, "enable_model_summary": False, "log_every_n_steps": 1}
TINY_STAGE1 = {
    "trainer": {"max_epochs": 1, "limit_train_batches": TRAIN_BATCHES, **QUIET},
    "model": {"init_args": {
        "encoder": {"kind": "grid", "patch_size": 4, "dim": 16, "depth": 1, "num_heads": 2},
        "decoder": {"dim": 16, "depth": 1, "num_heads": 2, "num_frequencies": 3},
        "latent_tokens": 4, "latent_dim": 8, "sampling": {"num_queries": 64},
    }},
    "data": DATA,
}
TINY_STAGE2 = {
    "trainer": {"max_epochs": STAGE2_EPOCHS, "limit_train_batches": TRAIN_BATCHES, **QUIET},
    "model": {"init_args": {"operator": {"dim": 16, "depth": 1, "num_heads": 2}, "sampling": {"num_queries": 64},
                            "loss": {"inverse_loss_warmup_epochs": 1}}},
    "data": DATA,
}
TINY_EVAL = {"trainer": QUIET, "data": DATA}


def write_travelling_waves(path: Path) -> None:
    """PDEBench per-sample groups: data (T, X, Y, 2) of u, v waves moving one cell per frame."""
    rng = np.random.default_rng(0)
    axis = (np.arange(RES) + 0.5) / RES
    x, y = np.meshgrid(axis, axis, indexing="ij")
    times = np.arange(STEPS) / RES
    with h5py.File(path, "w") as file:
        file.attrs["field_names"] = ["u", "v"]
        for index in range(TRAJECTORIES):
            phase, amplitude = rng.uniform(0, 2 * np.pi), rng.uniform(0.5, 1.5)
            u = [amplitude * np.sin(2 * np.pi * (x - t) + phase) for t in times]
            v = [amplitude * np.cos(2 * np.pi * (y + t) + phase) for t in times]
            group = file.create_group(f"{index:04d}")
            group["data"] = np.stack([np.stack(u), np.stack(v)], axis=-1).astype(np.float32)
            group["grid/x"], group["grid/y"], group["grid/t"] = axis, axis, times


def upt_script() -> str:
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    script = shutil.which("upt", path=search)
    assert script, "the `upt` console script is missing: run `pip install -e .`"
    return script


@contextlib.contextmanager
def one_thread():
    """Tiny models run several times faster on one thread when the cores are shared."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def run_upt(workdir: Path, *args: str) -> str:
    result = subprocess.run([upt_script(), *args], cwd=workdir, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, f"upt {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    assert "Tip:" not in result.stdout + result.stderr  # Lightning's advertisements are dropped (console.py)
    return result.stdout


def run_main(*args: str) -> int:
    """`upt ARGS` in-process: the exit status, whether main returns it or the parser exits."""
    try:
        return main(list(args))
    except SystemExit as exit_:
        return exit_.code


def printed_checkpoint(stdout: str, kind: str) -> Path:
    lines = [line for line in stdout.splitlines() if line.startswith(f"{kind}: ")]
    assert len(lines) == 1, f"expected one '{kind}: PATH' line in:\n{stdout}"
    return Path(lines[0].split(": ", 1)[1])


def metric_rows(path: Path, key: str) -> list[dict[str, float]]:
    """Rows of a CSVLogger metrics.csv that hold ``key``, with the non-empty values as floats."""
    with open(path) as file:
        return [{k: float(v) for k, v in row.items() if v} for row in csv.DictReader(file) if row.get(key)]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """Stage 1 in-process, then stage 2 through the console script, in a fresh working directory."""
    workdir = tmp_path_factory.mktemp("upt_cli")
    write_travelling_waves(workdir / "tiny.h5")
    for name, override in (("tiny_stage1.yaml", TINY_STAGE1), ("tiny_stage2.yaml", TINY_STAGE2),
                           ("tiny_eval.yaml", TINY_EVAL)):
        (workdir / name).write_text(yaml.safe_dump(override))
    stage1_out = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(stage1_out), one_thread():
        patch.chdir(workdir)
        patch.setattr(sys, "argv", ["upt"])
        assert run_main("fit", "--config", str(STAGE1), "--config", "tiny_stage1.yaml") == 0
    stage1_ckpt = workdir / printed_checkpoint(stage1_out.getvalue(), "best checkpoint (val/nrmse)")
    stage2_out = run_upt(workdir, "fit", "--config", str(STAGE2), "--config", "tiny_stage2.yaml",
                         f"--model.init_args.autoencoder_ckpt={stage1_ckpt}")
    stage2_last = workdir / printed_checkpoint(stage2_out, "latest checkpoint")
    return SimpleNamespace(workdir=workdir, stage1_ckpt=stage1_ckpt, stage2_last=stage2_last,
                           stage2_metrics=stage2_last.parent.parent / "metrics.csv")


@pytest.fixture
def in_workdir(pipeline, monkeypatch):
    monkeypatch.chdir(pipeline.workdir)
    monkeypatch.setattr(sys, "argv", ["upt"])
    with one_thread():
        yield pipeline


def test_stage1_model_takes_fields_and_grid_from_the_data_file(pipeline):
    checkpoint = torch.load(pipeline.stage1_ckpt, map_location="cpu", weights_only=True)
    hparams = checkpoint["hyper_parameters"]
    assert dict(hparams["field_channels"]) == {"u": 1, "v": 1}
    assert list(hparams["grid_shape"]) == [RES, RES]
    assert hparams["coord_dim"] == 2
    assert hparams["_class_path"] == "upt_lightning.modules.AutoencoderModule"


def test_fit_generates_a_missing_built_in_data_file(in_workdir, tmp_path, capsys):
    path = tmp_path / "data" / "burgers2d_16.h5"
    options = {"resolution": 16, "num": 6, "num_steps": 6}
    override = {"data": {"init_args": {"path": str(path), "generate": "burgers2d", "generate_options": options}},
                "trainer": {"limit_train_batches": 1, "limit_val_batches": 1}}
    (tmp_path / "generate.yaml").write_text(yaml.safe_dump(override))
    assert run_main("fit", "--config", str(STAGE1), "--config", "tiny_stage1.yaml",
                    "--config", str(tmp_path / "generate.yaml")) == 0
    with h5py.File(path, "r") as file:
        assert len(file.keys()) == 6 and file["0000/data"].shape == (6, 16, 16, 2)
    checkpoint = printed_checkpoint(capsys.readouterr().out, "best checkpoint (val/nrmse)")
    hparams = torch.load(checkpoint, map_location="cpu", weights_only=True)["hyper_parameters"]
    assert list(hparams["grid_shape"]) == [16, 16] and dict(hparams["field_channels"]) == {"u": 1, "v": 1}


def test_stage2_trains_on_the_frozen_stage1_weights_with_the_curriculum(pipeline):
    stage1 = torch.load(pipeline.stage1_ckpt, map_location="cpu", weights_only=True)["state_dict"]
    stage2 = torch.load(pipeline.stage2_last, map_location="cpu", weights_only=True)
    carried = [key for key in stage1 if key.startswith(("encoder.", "decoder.", "normalizer."))]
    assert carried and all(torch.equal(stage1[key], stage2["state_dict"][key]) for key in carried)
    assert any(key.startswith("operator.") for key in stage2["state_dict"])
    # last.ckpt (for resuming) holds the final epoch, not a copy of the best one
    assert pipeline.stage2_last.name == "last.ckpt"
    assert stage2["global_step"] == STAGE2_EPOCHS * TRAIN_BATCHES
    # Curriculum with base 0.01, warmup 1: 0 before and AT warmup, min(0.01, max 0.05) from epoch 2
    weights = [row["train/w_inv_enc"] for row in metric_rows(pipeline.stage2_metrics, "train/w_inv_enc")]
    assert weights == pytest.approx([0.0, 0.0, 0.01], abs=1e-8)  # logged as float32


def test_validate_reproduces_the_last_epoch_validation_metrics(in_workdir):
    assert run_main("validate", "--config", str(STAGE2), "--config", "tiny_eval.yaml", "--ckpt_path",
                    str(in_workdir.stage2_last), "--trainer.logger.init_args.version=validate") == 0
    logs = in_workdir.stage2_metrics.parent.parent
    during_fit = metric_rows(in_workdir.stage2_metrics, "val/nrmse")[-1]
    validated = metric_rows(logs / "validate" / "metrics.csv", "val/nrmse")[0]
    keys = [key for key in during_fit if key.startswith("val/")]
    assert "val/rollout_nrmse_last" in keys and all(math.isfinite(during_fit[key]) for key in keys)
    assert during_fit["val/nrmse"] > 0
    expected = {key: during_fit[key] for key in keys}
    assert {key: validated[key] for key in keys} == pytest.approx(expected, rel=1e-6)


def test_test_subcommand_matches_the_checkpoint_evaluated_directly(in_workdir):
    from lightning.pytorch import Trainer

    from upt_lightning.data.datamodules import GridDataModule
    from upt_lightning.modules import OperatorModule

    assert run_main("test", "--config", str(STAGE2), "--config", "tiny_eval.yaml", "--ckpt_path",
                    str(in_workdir.stage2_last), "--trainer.logger.init_args.version=test") == 0
    logged = metric_rows(in_workdir.stage2_metrics.parent.parent / "test" / "metrics.csv", "test/nrmse")[0]

    model = OperatorModule.load_from_checkpoint(in_workdir.stage2_last, map_location="cpu")
    data = GridDataModule(**DATA["init_args"])
    trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    reference = trainer.test(model, datamodule=data, verbose=False)[0]
    reference = {key.removesuffix("/dataloader_idx_0"): value for key, value in reference.items()}
    for key in ("test/nrmse", "test/rmse", "test/rollout_nrmse_last", "test/persistence_nrmse"):
        assert logged[key] == pytest.approx(reference[key], rel=1e-6), key


@pytest.mark.parametrize("config, model_class", [(STAGE1, "AutoencoderModule"), (STAGE2, "OperatorModule")])
def test_print_config_shows_the_stage_classes(in_workdir, capsys, config, model_class):
    assert run_main("fit", "--config", str(config), "--print_config") == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"] == f"upt_lightning.modules.{model_class}"
    assert printed["model"]["init_args"]["nan_policy"] == "raise"
    assert printed["data"]["init_args"]["path"] == "data/burgers2d_64.h5"
    callbacks = [callback["class_path"] for callback in printed["trainer"]["callbacks"]]
    assert ("upt_lightning.callbacks.InverseLossCurriculum" in callbacks) == (model_class == "OperatorModule")


@pytest.mark.parametrize("config, extra, message", [
    (STAGE2, [], "pass autoencoder_ckpt=PATH"),
    (STAGE2, ["--model.init_args.autoencoder_ckpt=missing.ckpt"], "checkpoint missing.ckpt does not exist"),
    (STAGE2, ["--ckpt_path=missing.ckpt"], "--ckpt_path missing.ckpt does not exist"),
    (STAGE1, ["--data.init_args.batch_size=0"], "batch_size must be at least 1, got 0"),
    (STAGE1, ["--model.init_args.lambda_cycle=-1"], "lambda_cycle must be >= 0"),
    (STAGE1, ["--data.init_args.path=no.h5", "--data.init_args.generate=null"], "no.h5 does not exist"),
    (STAGE1, ["--model.init_args.lamda_cycle=1"], "lamda_cycle"),
    (STAGE1, ["--model.init_args.nan_policy=ignore"], "nan_policy"),
])
def test_user_errors_exit_2_with_a_message_and_no_traceback(in_workdir, capsys, config, extra, message):
    subcommand = "validate" if any(arg.startswith("--ckpt_path") for arg in extra) else "fit"
    assert run_main(subcommand, "--config", str(config), "--config", "tiny_eval.yaml", *extra) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_no_arguments_prints_help_and_version_prints_version(in_workdir, capsys):
    assert run_main() == 0
    help_text = capsys.readouterr().out
    for word in ("fit", "validate", "test", "--config", "--version"):
        assert word in help_text
    assert "predict" not in help_text
    version = subprocess.run([upt_script(), "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.strip() == f"upt_lightning {__version__}"


def test_sigterm_stops_a_fit_with_status_143_naming_the_checkpoint_to_continue_from(in_workdir, capsys):
    # A real SIGTERM after step 3 (epoch 1 of 2 steps each): Lightning's handler stops the fit.
    status = run_main("fit", "--config", str(STAGE1), "--config", "tiny_stage1.yaml", "--trainer.max_epochs=2",
                      "--trainer.callbacks+=upt_lightning.runtime.faults.SignalAtStep",
                      "--trainer.callbacks.step=3", "--trainer.callbacks.signum=SIGTERM")
    assert status == 143
    err = capsys.readouterr().err
    assert "upt: interrupted by SIGTERM: rerun the same command with --ckpt_path " in err
    checkpoint = Path(err.split("--ckpt_path ", 1)[1].split()[0])
    assert checkpoint.name == "last.ckpt"
    assert torch.load(checkpoint, map_location="cpu", weights_only=True)["global_step"] == TRAIN_BATCHES


@pytest.fixture(scope="module")
def train_py_run(tmp_path_factory):
    """A tiny train.py run (in-process): its results and the data file it trained on."""
    from upt_lightning.pipeline import run_experiment

    tmp = tmp_path_factory.mktemp("train_py")
    cfg = compose_train([*tiny_overrides("burgers_upt", tmp / "data"), f"+run_dir={tmp / 'run'}",
                         f"cache_dir={tmp / 'cache'}", "evaluate.plots=false", "evaluate.superres=false",
                         "trainer.log_every_n_steps=1"])  # an epoch has 3 batches
    with one_thread():
        results = run_experiment(cfg)
    return SimpleNamespace(results=results, data=cfg.data.path, horizon=cfg.data.rollout_horizon,
                           batch_size=cfg.data.batch_size)


def test_a_train_py_checkpoint_is_read_by_test_and_load_from_checkpoint(train_py_run, tmp_path, monkeypatch):
    from upt_lightning.modules import AutoencoderModule, OperatorModule

    results = train_py_run.results
    for path, module in ((results["autoencoder_ckpt"], AutoencoderModule), (results["operator_ckpt"], OperatorModule)):
        hparams = torch.load(path, map_location="cpu", weights_only=True)["hyper_parameters"]
        assert hparams["_class_path"] == f"{module.__module__}.{module.__qualname__}"
        assert isinstance(module.load_from_checkpoint(path, map_location="cpu"), module)  # the extra key is ignored

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["upt"])
    with one_thread():
        assert run_main("test", "--config", str(STAGE2), "--ckpt_path", results["operator_ckpt"],
                        f"--data.init_args.path={train_py_run.data}", "--data.init_args.generate=null",
                        f"--data.init_args.rollout_horizon={train_py_run.horizon}",
                        f"--data.init_args.batch_size={train_py_run.batch_size}", "--trainer.enable_progress_bar=false",
                        "--trainer.logger.init_args.version=test") == 0
    logged = metric_rows(tmp_path / "outputs/cli/burgers_upt/test/metrics.csv", "test/nrmse")[0]
    for key in ("test/nrmse", "test/rmse", "test/rollout_nrmse_last", "test/persistence_nrmse"):
        assert logged[key] == pytest.approx(results["metrics"][key], rel=1e-6), key


def test_a_checkpoint_without_its_class_path_exits_2_with_the_fix(train_py_run, tmp_path, monkeypatch, capsys):
    checkpoint = torch.load(train_py_run.results["operator_ckpt"], map_location="cpu", weights_only=True)
    del checkpoint["hyper_parameters"]["_class_path"]  # as train.py wrote them before it recorded the class
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)
    monkeypatch.setattr(sys, "argv", ["upt"])
    assert run_main("test", "--config", str(STAGE2), "--ckpt_path", str(old)) == 2
    err = capsys.readouterr().err
    assert f"upt: error: --ckpt_path {old} does not name its model class; add it once with: python -c" in err
    assert "Given value" not in err and "Traceback" not in err
    exec(err.split('python -c "', 1)[1].rsplit('"', 1)[0])  # the printed fix
    fixed = torch.load(old, map_location="cpu", weights_only=True)["hyper_parameters"]["_class_path"]
    assert fixed == "upt_lightning.modules.OperatorModule"


def test_a_checkpoint_with_a_removed_option_left_off_is_read_and_one_left_on_is_refused(train_py_run, tmp_path,
                                                                                       monkeypatch, capsys):
    """Checkpoints of earlier versions store ``input_noise`` among their hyperparameters: at 0 (off) they load,
    on (the model trained with it) they are refused with the reason, not with jsonargparse's dump."""
    checkpoint = torch.load(train_py_run.results["operator_ckpt"], map_location="cpu", weights_only=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["upt"])
    for noise, code in ((0.0, 0), (0.05, 2)):
        checkpoint["hyper_parameters"]["input_noise"] = noise
        old = tmp_path / f"noise{noise}.ckpt"
        torch.save(checkpoint, old)
        with one_thread():
            assert run_main("test", "--config", str(STAGE2), "--ckpt_path", str(old),
                            f"--data.init_args.path={train_py_run.data}", "--data.init_args.generate=null",
                            f"--data.init_args.rollout_horizon={train_py_run.horizon}",
                            f"--data.init_args.batch_size={train_py_run.batch_size}",
                            "--trainer.enable_progress_bar=false", "--trainer.logger.init_args.version=test") == code
    err = capsys.readouterr().err
    assert "was trained with input_noise on, an option that was removed" in err and "Traceback" not in err
