"""Which model a config trains: UPT (the presets small, tiny, base) or a baseline (model=fno, model=gino)."""

from __future__ import annotations

from omegaconf import DictConfig

from upt_lightning.errors import ConfigError

MODEL_KINDS = ("upt", "fno", "gino")
BASELINES = ("fno", "gino")  # trained in place of UPT's two stages, as one stage-2 fit
LABELS = {"upt": "UPT", "fno": "FNO", "gino": "GINO"}


def model_kind(cfg: DictConfig) -> str:
    """``model.kind``: "upt" (also when the preset names no kind), "fno" or "gino"."""
    kind = cfg.model.get("kind", "upt")
    if kind not in MODEL_KINDS:
        raise ConfigError(f"model.kind={kind!r} is unknown; choose one of {list(MODEL_KINDS)} (the UPT presets "
                          "model=small, tiny or base, or the baselines model=fno and model=gino)")
    return kind
