"""Zero-shot super-resolution: the coarse test trajectories encoded, decoded on a finer grid.

The finer copy holds only the test split's trajectories (root attribute ``trajectory_ids``),
written by the same generator from the same seed: their values equal those of the whole set on
the finer grid. For the default 2D data that is 26 of 256 trajectories at 128x128, about 70 MB
and a few seconds, instead of 700 MB and half a minute for all of them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import h5py
import torch
from omegaconf import DictConfig, OmegaConf

from upt_lightning.data.datamodules import rollout_windows
from upt_lightning.data.readers import open_source
from upt_lightning.data.recipes import GENERATOR
from upt_lightning.errors import DataError
from upt_lightning.baselines import FNOModule
from upt_lightning.metrics import RolloutErrorMetrics
from upt_lightning.modules import OperatorModule
from upt_lightning.modules.evaluation import synced_compute, without_padding

log = logging.getLogger("upt_lightning.pipeline")

def positions_in_file(path: Path, ids: Sequence[int]) -> list[int] | None:
    """Where trajectories ``ids`` of the whole set lie in the file: its ``trajectory_ids`` attribute
    (a copy of some trajectories), else the file holds them all in order. None when some are missing."""
    with open_source(path) as source:  # a DataError names a file that is not a readable data file
        count = source.num_trajectories
    with h5py.File(path, "r") as file:
        stored = file.attrs.get("trajectory_ids")
    held = list(range(count)) if stored is None else [int(t) for t in stored]
    if len(held) != count:
        raise DataError(f"{path}: its attribute trajectory_ids names {len(held)} trajectories but it holds "
                        f"{count}; delete the file to have it written again")
    where = {traj: position for position, traj in enumerate(held)}
    if any(int(t) not in where for t in ids):
        return None
    return [where[int(t)] for t in ids]


def finer_copy(path: Path, generate: str | None, options: dict, ids: Sequence[int]) -> list[int]:
    """Make sure ``path`` holds trajectories ``ids`` on the finer grid; returns their positions in it.

    A missing file, or one of ours holding other trajectories (another split) or written with other
    settings (see ``_stale``), is (re)written with only ``ids``. A user's own file must hold them:
    otherwise a DataError says what is missing.
    """
    stale = _stale(path, generate, options)
    if stale:
        log.info("the finer copy %s was written with other settings (%s): writing it again", path, stale)
    elif path.exists():
        positions = positions_in_file(path, ids)
        if positions is not None:
            return positions
        with h5py.File(path, "r") as file:
            ours = file.attrs.get("generator") == GENERATOR
        if not ours or generate is None:
            raise DataError(
                f"{path} lacks some test trajectories {list(ids)[:8]}...: give data.superres.path a finer copy "
                "of the whole data set, or set evaluate.superres=false"
            )
        log.info("the finer copy %s holds other trajectories (another split): writing it again", path)
    elif generate is None:
        raise DataError(f"the finer copy {path} does not exist and data.generate is null: write it, or set "
                        "evaluate.superres=false")
    from upt_lightning.data.generate import generate_dataset

    generate_dataset(generate, path, trajectories=ids, **options)
    return positions_in_file(path, ids)


def _stale(path: Path, generate: str | None, options: dict) -> str:
    """How our finer copy at ``path`` differs from the settings it is asked for, "" when it does not (or is
    missing, or a user's own file).

    The copy's name, like the coarse file's, carries only some settings: without this check a copy of
    other time steps or another seed would be read as the same trajectories on the finer grid. Its grid
    (the recipe's grid option) is left to the grid check of ``superres_metrics``, which names
    data.superres.factor: a copy on another grid is a choice of path or factor, not an outdated file.
    """
    if generate is None or not path.exists():
        return ""
    from upt_lightning.data.generate import describe_differences, stale_settings
    from upt_lightning.data.recipes import DATASETS

    differences = stale_settings(path, generate, **options)
    differences.pop(DATASETS[generate].grid_option, None)
    return describe_differences(differences)


@torch.no_grad()
def superres_metrics(cfg: DictConfig, model: OperatorModule | FNOModule, datamodule) -> dict[str, float | str]:
    """Rollout nRMSE against horizon of the coarse test windows predicted on the ``factor``-times finer grid.

    The model's ``rollout(..., query_points=fine points)`` decides how: UPT encodes the coarse frame and decodes
    the finer points; the FNO interpolates the coarse frame onto the finer grid and steps there.
    """
    spec = cfg.data.get("superres")
    if not spec or not cfg.evaluate.superres or datamodule.grid_shape is None:
        return {}
    coarse = datamodule.grid_shape[0]
    options = {**OmegaConf.to_container(cfg.data.generate_options or {}, resolve=True),
               "resolution": coarse, "output_resolution": int(spec.factor) * coarse}
    ids = list(datamodule.test_trajectories)
    positions = finer_copy(Path(spec.path), cfg.data.generate, options, ids)
    hp = datamodule.hparams
    source = open_source(spec.path)
    expected = tuple(int(spec.factor) * size for size in datamodule.grid_shape)
    if source.grid_shape != expected:
        raise DataError(f"{spec.path} holds a {source.grid_shape} grid, but super-resolution by "
                        f"data.superres.factor={spec.factor} needs {expected}: point data.superres.path at such a copy")
    fine_ids = torch.full((source.num_trajectories,), -1, dtype=torch.long)
    fine_ids[positions] = torch.tensor(ids)
    # The coarse test rollout windows (datamodule.setup), cut from the same trajectories of the finer file.
    windows = rollout_windows(source, positions, hp.rollout_horizon, hp.frame_stride, hp.rollout_starts)
    source.close()  # loader workers open their own handle
    model.eval()
    metric = RolloutErrorMetrics(hp.rollout_horizon, datamodule.num_channels, source.grid_shape,
                                 channel_names=datamodule.field_names).to(model.device)
    for coarse_batch, fine_batch in zip(datamodule.test_dataloader()[1], datamodule.eval_loader(windows),
                                        strict=True):
        # Under torchrun each process reads its shard; drop the shards' padding (data/even_shards.py).
        coarse_batch, fine_batch = without_padding(coarse_batch), without_padding(fine_batch)
        if coarse_batch is None:
            continue
        if not torch.equal(coarse_batch["traj"], fine_ids[fine_batch["traj"]]):
            raise RuntimeError("coarse and fine test windows hold different trajectories")
        coarse_batch = {k: v.to(model.device) for k, v in coarse_batch.items() if isinstance(v, torch.Tensor)}
        pred = model.rollout(coarse_batch["fields"], coarse_batch["coords"], hp.rollout_horizon,
                             dt=coarse_batch["dt"], query_points=fine_batch["coords"].to(model.device))
        metric.update(pred, fine_batch["targets"].to(model.device))
    values = synced_compute(metric)
    log.info("zero-shot super-resolution %s -> %s evaluated", datamodule.grid_shape, source.grid_shape)
    out = {f"superres/rollout_nrmse_h{k + 1}": float(v) for k, v in enumerate(values["nrmse"])}
    out["superres/grid"] = "x".join(str(s) for s in source.grid_shape)
    return out
