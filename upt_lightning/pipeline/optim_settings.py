"""The ``optim`` config group as keyword arguments of the training modules."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from upt_lightning.errors import ConfigError

OPTIM_KEYS = ("optimizer", "scheduler", "weight_decay", "warmup_fraction", "min_lr_ratio", "betas", "muon_lr_ratio")
# What the modules do without the group (conf/optim/adamw_cosine.yaml holds the same values).
DEFAULT_OPTIM = {"optimizer": "adamw", "scheduler": "cosine", "weight_decay": 1e-4, "warmup_fraction": 0.05,
                 "min_lr_ratio": 0.0, "betas": [0.9, 0.999], "muon_lr_ratio": 1.0}


def optim_settings(cfg: DictConfig) -> dict:
    """``cfg.optim`` (missing keys from DEFAULT_OPTIM) as module kwargs; an unknown key is a ConfigError."""
    given = OmegaConf.to_container(cfg.optim, resolve=True) if cfg.get("optim") is not None else {}
    unknown = sorted(set(given) - set(OPTIM_KEYS))
    if unknown:
        raise ConfigError(f"optim.{unknown[0]} is not an optimiser setting; the settings are "
                          f"{['optim.' + key for key in OPTIM_KEYS]}")
    settings = {**DEFAULT_OPTIM, **given}
    settings["betas"] = [float(b) for b in settings["betas"]]
    return settings
