"""``data.conservation``: the quantities a data set declares for the conservation diagnostics."""

from __future__ import annotations

from collections.abc import Sequence

from omegaconf import DictConfig, OmegaConf

from upt_lightning.errors import ConfigError
from upt_lightning.metrics.conservation import resolve_quantities
from upt_lightning.pipeline.multi_data import conservation_by_dataset, is_multi_data


def conservation_of(cfg: DictConfig) -> dict | None:
    """``data.conservation`` as plain types (checkpoints keep it), None when the data set declares none."""
    if is_multi_data(cfg):  # several datasets: {dataset: its declaration}
        return conservation_by_dataset(cfg)
    spec = cfg.data.get("conservation")
    return None if spec is None else OmegaConf.to_container(spec, resolve=True)


def check_conservation(cfg: DictConfig, field_names: Sequence[str]) -> None:
    """ConfigError, before anything is trained, for a declaration the data's channels cannot serve."""
    try:
        quantities = resolve_quantities(conservation_of(cfg), field_names)
    except ValueError as error:
        raise ConfigError(f"data.conservation: {error}") from None
    if (cfg.loss.get("lambda_conservation") or 0) > 0 and not quantities:
        raise ConfigError("loss.lambda_conservation > 0 but the data set declares no conserved quantities: declare "
                          "data.conservation ({name: {kind: mean|energy|enstrophy, fields: [...]}}) or set "
                          "loss.lambda_conservation=0")
