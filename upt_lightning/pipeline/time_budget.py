"""Wall-clock limits of the training stages: ``time_budget`` and ``stageN.trainer.max_time``.

A stage's own ``stageN.trainer.max_time`` wins; otherwise UPT's stage 1 gets ``stage1.budget_share`` of
``time_budget`` (null: half) and stage 2 the rest, and the FNO baseline, which has no stage 1, gets all of
it in its one stage. The limit becomes the stage Trainer's ``max_time``: Lightning stops after the first
training batch that ends past it, then runs one more validation and checkpoint, so a stage overruns by
at most one batch and one validation. Resumed runs count the time already spent (Lightning keeps it in
the checkpoint).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta

from omegaconf import DictConfig

from upt_lightning.errors import ConfigError
from upt_lightning.pipeline.model_kind import BASELINES, model_kind

DURATION = re.compile(r"(\d+):(\d\d):(\d\d):(\d\d)")
DEFAULT_STAGE1_SHARE = 0.5


def parse_duration(value, key: str) -> timedelta | None:
    """None, seconds (> 0), Lightning's "DD:HH:MM:SS" or timedelta arguments ({minutes: 4}) -> timedelta."""
    if value is None:
        return None
    form = '"DD:HH:MM:SS" (e.g. "00:00:04:00"), seconds (240) or timedelta arguments ({minutes: 4})'
    if isinstance(value, Mapping):
        try:
            duration = timedelta(**{str(name): amount for name, amount in value.items()})
        except TypeError:
            raise ConfigError(f"{key}={dict(value)} is not a duration: give {form}") from None
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        duration = timedelta(seconds=value)
    elif isinstance(value, str) and DURATION.fullmatch(value.strip()):
        days, hours, minutes, seconds = (int(part) for part in DURATION.fullmatch(value.strip()).groups())
        duration = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    else:
        raise ConfigError(f"{key}={value!r} is not a duration: give {form}")
    if duration.total_seconds() <= 0:
        raise ConfigError(f"{key}={value!r} must be a positive duration, or null for no limit")
    return duration


def stage1_share(cfg: DictConfig) -> float:
    share = cfg.stage1.get("budget_share")
    if share is None:
        return DEFAULT_STAGE1_SHARE
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share < 1:
        raise ConfigError(f"stage1.budget_share={share!r} must lie strictly between 0 and 1 (null: 0.5)")
    return float(share)


def stage_max_time(cfg: DictConfig, stage: str) -> timedelta | None:
    """The wall-clock limit of ``stage`` ("stage1" or "stage2"), None for none."""
    own = parse_duration((cfg[stage].get("trainer") or {}).get("max_time"), f"{stage}.trainer.max_time")
    if own is not None:
        return own
    budget = parse_duration(cfg.get("time_budget"), "time_budget")
    if budget is None:
        return None
    if model_kind(cfg) in BASELINES:
        return budget if stage == "stage2" else None
    share = stage1_share(cfg)
    return budget * (share if stage == "stage1" else 1 - share)


def check_time_limits(cfg: DictConfig) -> None:
    """ConfigError naming the key of a malformed limit, before anything is trained."""
    parse_duration(cfg.get("time_budget"), "time_budget")
    stage1_share(cfg)
    for stage in ("stage1", "stage2"):
        stage_max_time(cfg, stage)
