"""The settings objects of the ``loss``, ``sampling`` and ``optim`` config groups, built by Hydra's
``instantiate`` from each group's ``_target_`` (conf/loss, conf/sampling, conf/optim): the modules receive
them whole. A group without ``_target_`` builds the project's class; an impossible value is a ConfigError
raised by the class that owns the setting, naming the key."""

from __future__ import annotations

from typing import Any, TypeVar

from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from upt_lightning.errors import ConfigError
from upt_lightning.losses import OperatorLoss
from upt_lightning.modules.optim import OptimSettings
from upt_lightning.query_sampling import QuerySampling
from upt_lightning.settings import check_known_keys

T = TypeVar("T")
# What the optim group changes when it is absent, without the stage's lr (the stage-1 cache key compares to it).
DEFAULT_OPTIM = {key: value for key, value in OptimSettings().as_dict().items() if key != "lr"}


def group_values(cfg: DictConfig, group: str) -> dict[str, Any]:
    """The group's settings as plain values, without ``_target_`` ({} when the config has no such group)."""
    node = cfg.get(group)
    values = OmegaConf.to_container(node, resolve=True) if node is not None else {}
    values.pop("_target_", None)
    return values


def build_settings(cfg: DictConfig, group: str, cls: type[T], **extra: Any) -> T:
    """``instantiate(cfg.<group>, **extra)``, checked to be a ``cls``; ConfigError for an unknown key or an
    impossible value (the owner's message)."""
    node = cfg.get(group)
    targeted = node is not None and "_target_" in node
    try:
        target = get_class(node["_target_"]) if targeted else cls
    except Exception as error:  # Hydra raises ImportError or ValueError, varying by version
        raise ConfigError(f"{group}._target_={node['_target_']!r} names no class: {error}") from None
    values = {**group_values(cfg, group), **extra}
    try:
        check_known_keys(target, values, group)
        built = instantiate(node, _convert_="all", **extra) if targeted else cls(**values)
    except InstantiationException as error:
        raise ConfigError(str(error.__cause__ or error)) from None
    except (ValueError, TypeError) as error:
        raise ConfigError(str(error)) from None
    if not isinstance(built, cls):
        raise ConfigError(f"{group}._target_={node['_target_']} builds a {type(built).__name__}, not a {cls.__name__}")
    return built


def optim_of(cfg: DictConfig, lr: float) -> OptimSettings:
    """The ``optim`` group at a stage's learning rate (``stage1.lr``, ``stage2.lr``)."""
    return build_settings(cfg, "optim", OptimSettings, lr=lr)


def sampling_of(cfg: DictConfig) -> QuerySampling:
    return build_settings(cfg, "sampling", QuerySampling)


def loss_of(cfg: DictConfig) -> OperatorLoss:
    return build_settings(cfg, "loss", OperatorLoss)


def optim_identity(cfg: DictConfig) -> dict[str, Any]:
    """The optim group over its defaults, without lr (what stage 1's cache key records)."""
    values = {**DEFAULT_OPTIM, **group_values(cfg, "optim")}
    values["betas"] = [float(b) for b in values["betas"]]
    return values
