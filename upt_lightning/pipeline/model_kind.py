"""Which model a config trains: UPT (the presets small, tiny, base) or the FNO baseline (model=fno)."""

from __future__ import annotations

from omegaconf import DictConfig

from upt_lightning.errors import ConfigError

MODEL_KINDS = ("upt", "fno")
LABELS = {"upt": "UPT", "fno": "FNO"}


def model_kind(cfg: DictConfig) -> str:
    """``model.kind``: "upt" (also when the preset names no kind) or "fno"."""
    kind = cfg.model.get("kind", "upt")
    if kind not in MODEL_KINDS:
        raise ConfigError(f"model.kind={kind!r} is unknown; choose one of {list(MODEL_KINDS)} (the UPT presets "
                          "model=small, tiny or base, or the FNO baseline model=fno)")
    return kind
