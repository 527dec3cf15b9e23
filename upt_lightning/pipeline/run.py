"""One experiment end to end, as `python train.py +experiment=...` runs it."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import lightning.pytorch as pl
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from upt_lightning.errors import ConfigError, is_user_error
from upt_lightning.pipeline.checkpoint_checks import check_autoencoder_ckpt
from upt_lightning.pipeline.baseline import train_baseline
from upt_lightning.pipeline.config_checks import check_against_data, check_config
from upt_lightning.pipeline.conservation import check_conservation
from upt_lightning.pipeline.data_settings import datamodule_settings
from upt_lightning.pipeline.data_checks import validate_data_once
from upt_lightning.pipeline.evaluate import example_rollout, split_metrics, test_metrics, write_config
from upt_lightning.pipeline.model_kind import BASELINES, LABELS, model_kind
from upt_lightning.pipeline.multi_data import check_multi_against_data, is_multi_data
from upt_lightning.pipeline.superres import superres_metrics
from upt_lightning.pipeline.report import print_summary, write_results
from upt_lightning.pipeline.resume import check_resume
from upt_lightning.pipeline.stage1 import check_init_from_fits, obtain_autoencoder
from upt_lightning.pipeline.stage2 import train_operator
from upt_lightning.plots import conservation_curves, plot_conservation, plot_error_vs_horizon, plot_rollout_snapshots
from upt_lightning.runtime.allocator import keep_freed_memory

log = logging.getLogger("upt_lightning.pipeline")


def build_datamodule(cfg: DictConfig):
    """Instantiate the data group (minus its super-resolution and conservation entries), generate if missing,
    set up."""
    data_cfg = datamodule_settings(cfg)
    try:
        datamodule = instantiate(data_cfg, _convert_="all")
    except InstantiationException as error:
        cause = error.__cause__
        if cause is not None and is_user_error(cause):
            raise cause from None
        if isinstance(cause, (ValueError, TypeError)):  # the DataModule rejected an argument
            raise ConfigError(f"data: {cause}") from None
        raise
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def run_dir_of(cfg: DictConfig) -> Path:
    try:
        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:  # called outside Hydra (tests, notebooks)
        return Path(cfg.get("run_dir", "outputs/run"))


def overrides_of() -> list[str]:
    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:
        return []


def smallest_point_count(datamodule) -> int:
    source = datamodule.source
    return min(source.num_points(traj) for traj in range(source.num_trajectories))


def run_experiment(cfg: DictConfig) -> dict:
    """Train and evaluate; returns the results written to results.json.

    Everything that can be checked before training is (config, data file, given checkpoints, resume),
    and only then is anything written to the run dir, so a mistake never overwrites an earlier run's files.
    The FNO baseline (model=fno) has no stage 1 and trains in place of stage 2, on the same data.
    """
    start = time.time()
    check_config(cfg)
    if cfg.get("keep_freed_memory", True):
        keep_freed_memory()
    kind = model_kind(cfg)
    run_dir = run_dir_of(cfg)
    check_resume(cfg, run_dir)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)

    phases: dict[str, float] = {}  # wall seconds per phase, for results.json and the README's figures
    mark = time.time()

    def lap(name: str) -> None:
        nonlocal mark
        now = time.time()
        phases[name] = round(now - mark, 1)
        mark = now

    datamodule = build_datamodule(cfg)
    if is_multi_data(cfg):
        check_multi_against_data(cfg, datamodule)
        for child in datamodule.children.values():
            validate_data_once(cfg, child)
    else:
        check_against_data(cfg, datamodule.grid_shape, smallest_point_count(datamodule))
        check_conservation(cfg, datamodule.field_names)
        validate_data_once(cfg, datamodule)
    check_autoencoder_ckpt(cfg, datamodule)
    check_init_from_fits(cfg, datamodule)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_config(cfg, run_dir)
    lap("data_and_checks")
    log.info("run dir %s; the same command continues it after an interruption if it names "
             "hydra.run.dir=%s", run_dir, run_dir)
    if kind in BASELINES:
        autoencoder_ckpt = None
        trainer, model, best = train_baseline(cfg, datamodule, run_dir)
    else:
        autoencoder_ckpt = obtain_autoencoder(cfg, datamodule, run_dir)
        lap("stage1")
        trainer, model, best = train_operator(cfg, datamodule, autoencoder_ckpt, run_dir)
    lap("stage2")

    # The objective of sweeps and searches is a validation metric of the best checkpoint: hyperparameters
    # chosen on the test split would make its figures optimistic. Test metrics are reported beside it.
    metrics: dict = split_metrics(trainer, model, datamodule, "val")
    lap("validate")
    if cfg.evaluate.test:
        metrics.update(test_metrics(trainer, model, datamodule))
        metrics.update(superres_metrics(cfg, model, datamodule))
        lap("test")
    results = {
        "overrides": overrides_of(),
        "metrics": metrics,
        "objective": metrics.get(cfg.objective),
        "objective_metric": cfg.objective,
        "model": kind,
        "autoencoder_ckpt": str(autoencoder_ckpt) if autoencoder_ckpt else None,
        "init_from": str(cfg.init_from) if cfg.get("init_from") else None,
        "operator_ckpt": str(best) if best else None,
        "wall_time_s": round(time.time() - start, 1),
        "phase_times_s": phases,
        "device": str(model.device),
        "throughput": stage_throughput(run_dir),
    }
    if is_multi_data(cfg):  # each dataset's file, fields, grid, time step and trajectories per split
        results["datasets"] = datamodule.describe()
    if trainer.is_global_zero:
        if cfg.evaluate.test and cfg.evaluate.plots:
            results["plots"] = [str(p) for p in make_plots(cfg, model, datamodule, metrics, run_dir)]
            lap("plots")
            results["wall_time_s"] = round(time.time() - start, 1)
        write_results(run_dir, results)
        print_summary(metrics, f"{run_dir} ({results['wall_time_s']:.0f} s)", LABELS[kind])
    return results


def stage_throughput(run_dir: Path) -> dict:
    """{stage: samples per second, train seconds, peak accelerator memory} of the stages trained in this run
    (a cached stage 1 has none), from the throughput.json each fit wrote."""
    out = {}
    for stage in ("stage1", "stage2"):
        path = run_dir / stage / "throughput.json"
        if path.is_file():
            out[stage] = json.loads(path.read_text())
    return out


def make_plots(cfg: DictConfig, model, datamodule, metrics: dict, run_dir: Path) -> list[Path]:
    """Error against horizon, conservation drift and rollout snapshots; one set per dataset of a
    multi-dataset run (``<dataset>_rollout_nrmse.png`` ...)."""
    if not is_multi_data(cfg):
        return _plots(cfg, model, datamodule, metrics, run_dir, "test", "")
    paths = []
    for name, child in datamodule.children.items():
        paths += _plots(cfg, model, child, metrics, run_dir, f"test/{name}", f"{name}_", dataset=name)
    return paths


def _plots(cfg: DictConfig, model, datamodule, metrics: dict, run_dir: Path, prefix: str, file_prefix: str,
           dataset: str | None = None) -> list[Path]:
    horizon = cfg.data.rollout_horizon
    model_curve = [metrics.get(f"{prefix}/rollout_nrmse_h{k}") for k in range(1, horizon + 1)]
    baseline = [metrics.get(f"{prefix}/persistence_rollout_nrmse_h{k}") for k in range(1, horizon + 1)]
    paths = []
    if None not in model_curve and None not in baseline:
        kind = model_kind(cfg)
        label = "UPT (latent rollout)" if kind == "upt" else LABELS[kind]
        paths.append(plot_error_vs_horizon(model_curve, baseline, run_dir / f"{file_prefix}rollout_nrmse.png",
                                           label=label))
    drift = conservation_curves(metrics, prefix=f"{prefix}/conservation/")
    if drift:
        paths.append(plot_conservation(drift, run_dir / f"{file_prefix}conservation.png",
                                       label=LABELS[model_kind(cfg)]))
    example = example_rollout(model, datamodule, dataset=dataset)
    paths.append(plot_rollout_snapshots(
        example["truth"], example["pred"], example["coords"], datamodule.grid_shape,
        list(cfg.evaluate.plot_horizons), run_dir / f"{file_prefix}rollout_snapshots.png",
        channel_name=datamodule.field_names[0],
    ))
    return paths
