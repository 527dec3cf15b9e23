"""Optimiser and learning-rate schedule from plain settings (the Hydra group ``optim``).

Every trainable module builds its optimiser here, so UPT's two stages and the baselines train under
the same rules and a comparison between them changes only the model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass

import torch
from lightning.pytorch.callbacks import Timer

from upt_lightning.modules.muon import MuonAdamW, muon_groups

OPTIMIZERS = ("adamw", "adam", "muon")
SCHEDULERS = ("cosine", "constant")


def check_optim_settings(
    optimizer: str, scheduler: str, weight_decay: float, warmup_fraction: float, min_lr_ratio: float,
    betas: Sequence[float], lr: float | None = None, muon_lr_ratio: float = 1.0,
) -> None:
    """Raise ValueError naming the first impossible setting (``lr`` too, when given)."""
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0):
        raise ValueError(f"the learning rate must be a positive number, got {lr!r}")
    if not (isinstance(muon_lr_ratio, (int, float)) and math.isfinite(muon_lr_ratio) and muon_lr_ratio > 0):
        raise ValueError(f"optim.muon_lr_ratio must be a positive number, got {muon_lr_ratio!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optim.optimizer={optimizer!r} is unknown; choose one of {OPTIMIZERS}")
    if scheduler not in SCHEDULERS:
        raise ValueError(f"optim.scheduler={scheduler!r} is unknown; choose one of {SCHEDULERS}")
    if not weight_decay >= 0:
        raise ValueError(f"optim.weight_decay must be >= 0, got {weight_decay}")
    if not 0 <= warmup_fraction < 1:
        raise ValueError(f"optim.warmup_fraction must lie in [0, 1), got {warmup_fraction}")
    if not 0 <= min_lr_ratio <= 1:
        raise ValueError(f"optim.min_lr_ratio must lie in [0, 1], got {min_lr_ratio}")
    if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
        raise ValueError(f"optim.betas must be two numbers in [0, 1), got {list(betas)}")


@dataclass(frozen=True)
class OptimSettings:
    """The optimiser and learning-rate schedule of one training stage (the Hydra group ``optim``, with the
    stage's ``lr``): "adamw", "adam" or "muon" (Muon at ``muon_lr_ratio * lr`` for the weight matrices, AdamW
    for the rest); a linear warm-up over ``warmup_fraction`` of the stage's steps, then "cosine" decays to
    ``min_lr_ratio * lr`` at the last step, "constant" keeps ``lr``. Checked on construction."""

    lr: float = 1e-3
    optimizer: str = "adamw"
    scheduler: str = "cosine"
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.05
    min_lr_ratio: float = 0.0
    betas: Sequence[float] = (0.9, 0.999)
    muon_lr_ratio: float = 1.0

    def __post_init__(self) -> None:
        check_optim_settings(self.optimizer, self.scheduler, self.weight_decay, self.warmup_fraction,
                             self.min_lr_ratio, self.betas, self.lr, muon_lr_ratio=self.muon_lr_ratio)
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))

    def as_dict(self) -> dict:
        """Plain values, as checkpoints store them (betas a list)."""
        return {**asdict(self), "betas": list(self.betas)}

    def build(self, params: Iterable[torch.nn.Parameter], total_steps: int, clock: Callable[[], float] | None = None,
              muon_exempt: Iterable[torch.nn.Parameter] = ()) -> dict:
        """:func:`build_optimizer` with these settings."""
        return build_optimizer(params, self.lr, total_steps, optimizer=self.optimizer, scheduler=self.scheduler,
                               weight_decay=self.weight_decay, warmup_fraction=self.warmup_fraction,
                               min_lr_ratio=self.min_lr_ratio, betas=self.betas, clock=clock,
                               muon_lr_ratio=self.muon_lr_ratio, muon_exempt=muon_exempt)


def lr_factor(
    step: int, total: int, warmup: int, scheduler: str, min_lr_ratio: float, time_fraction: float = 0.0
) -> float:
    """Multiplier of the base learning rate at optimiser step ``step`` of ``total``.

    Linear warm-up over ``warmup`` steps, then constant or a cosine from 1 down to ``min_lr_ratio``
    at the last step. ``time_fraction`` is the share of the stage's wall-clock budget already spent
    (0 without a budget): progress is the larger of the two, so a stage cut short by its time budget
    still warms up and decays its learning rate fully instead of stopping high up the cosine.
    """
    warm_share = warmup / total
    if step < warmup and time_fraction < warm_share:
        return max((step + 1) / warmup, time_fraction / warm_share)
    if scheduler == "constant":
        return 1.0
    progress = max(step / total, time_fraction)
    progress = min(max(progress - warm_share, 0.0) / max(1.0 - warm_share, 1e-12), 1.0)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def budget_clock(trainer) -> Callable[[], float] | None:
    """The share of the Trainer's ``max_time`` spent training so far, or None without a limit."""
    for callback in getattr(trainer, "callbacks", []) or []:
        if isinstance(callback, Timer) and callback._duration:
            duration = float(callback._duration)

            def spent(timer=callback) -> float:
                try:
                    return min(max(timer.time_elapsed("train") / duration, 0.0), 1.0)
                except TypeError:  # the clock has not started yet
                    return 0.0

            return spent
    return None


def build_optimizer(
    params: Iterable[torch.nn.Parameter], lr: float, total_steps: int, *, optimizer: str = "adamw",
    scheduler: str = "cosine", weight_decay: float = 1e-4, warmup_fraction: float = 0.05,
    min_lr_ratio: float = 0.0, betas: Sequence[float] = (0.9, 0.999), clock: Callable[[], float] | None = None,
    muon_lr_ratio: float = 1.0, muon_exempt: Iterable[torch.nn.Parameter] = (),
) -> dict:
    """What ``configure_optimizers`` returns: the optimiser and a per-step LambdaLR schedule.

    ``total_steps`` is the step count of the whole stage; ``clock`` (see :func:`budget_clock`) the
    share of its time budget spent, when it has one. ``optimizer="muon"``: Muon at ``muon_lr_ratio * lr``
    for the weight matrices, AdamW at ``lr`` for the rest and for the matrices in ``muon_exempt``
    (:mod:`upt_lightning.modules.muon`); the schedule scales both rates alike.
    """
    check_optim_settings(optimizer, scheduler, weight_decay, warmup_fraction, min_lr_ratio, betas,
                         muon_lr_ratio=muon_lr_ratio)
    params = list(params)
    if not params:
        raise RuntimeError("no trainable parameters: every model is frozen")
    if optimizer == "muon":
        opt = MuonAdamW(muon_groups(params, lr, muon_lr_ratio * lr, weight_decay, betas, muon_exempt))
    else:
        kind = torch.optim.AdamW if optimizer == "adamw" else torch.optim.Adam
        opt = kind(params, lr=lr, weight_decay=weight_decay, betas=tuple(float(b) for b in betas))
    total = max(int(total_steps), 1)
    warmup = int(warmup_fraction * total)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: lr_factor(step, total, warmup, scheduler, min_lr_ratio, clock() if clock else 0.0)
    )
    return {"optimizer": opt, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
