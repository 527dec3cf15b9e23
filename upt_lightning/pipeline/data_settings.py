"""The data config group: what the DataModule takes, apart from what only the evaluation reads."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from upt_lightning.pipeline.multi_data import multi_datamodule_settings

# Entries of the data group that the evaluation reads, not the DataModule: the finer copy for zero-shot
# super-resolution (pipeline/superres.py) and the conserved quantities (pipeline/conservation.py).
EVALUATION_KEYS = ("superres", "conservation")


def datamodule_settings(cfg: DictConfig) -> dict:
    """``cfg.data`` as plain types (``_target_`` included), without :data:`EVALUATION_KEYS`."""
    settings = OmegaConf.to_container(cfg.data, resolve=True)
    for key in EVALUATION_KEYS:
        settings.pop(key, None)
    if settings.get("datasets") is not None:  # several datasets: each gets its own settings
        return multi_datamodule_settings(settings)
    return settings
