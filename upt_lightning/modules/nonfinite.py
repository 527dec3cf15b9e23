"""What a training step does when its loss is NaN or Inf: stop with a message (``raise``) or skip the batch.

``skip`` relies on Lightning 2.6's automatic optimisation: when ``training_step`` returns None the closure
runs no backward; the gradients were just zeroed (set to None), so gradient clipping finds nothing to clip
and ``optimizer.step`` finds no gradient: parameters and AdamW moments stay untouched. The batch still
counts as a step for ``global_step`` and the step-wise LR schedule. With ``accumulate_grad_batches > 1``
only the poisoned batch's contribution is dropped: the window's optimizer step still happens with the
gradients of its other batches. Lightning refuses a None step under DDP (the ranks' gradient all-reduce
would go out of step), so ``skip`` is single-process only and rejected up front otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from upt_lightning.errors import ConfigError

NAN_POLICIES = ("raise", "skip")
HINT = (
    "Usually the learning rate is too high (stage1.lr / stage2.lr, or the model's lr) or the data hold extreme "
    "values; lower the learning rate, check the data, or set nan_policy=skip to skip such batches"
)


def check_nan_policy(policy: str) -> str:
    """The policy itself, or ValueError naming ``nan_policy`` and the choices."""
    if policy not in NAN_POLICIES:
        raise ValueError(f"nan_policy={policy!r} is unknown; choose one of {list(NAN_POLICIES)}")
    return policy


def check_policy_supported(policy: str, world_size: int) -> None:
    """``skip`` needs one process: Lightning raises on a skipped step under DDP (possibly hours in)."""
    if policy == "skip" and world_size > 1:
        raise ConfigError(
            f"nan_policy=skip works on one process only (this run has {world_size}): Lightning cannot skip an "
            "optimizer step under DDP; use nan_policy=raise, or train on one device"
        )


def finite_flag(loss: torch.Tensor, components: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """0-dim bool tensor on the loss's device: the total and every component are finite (no host sync)."""
    values = [loss.detach().reshape(-1), *(c.detach().reshape(-1) for c in components.values())]
    return torch.isfinite(torch.cat([v.float() for v in values])).all()


def all_finite(loss: torch.Tensor, components: Mapping[str, torch.Tensor]) -> bool:
    """True when the total and every component are finite; one host sync for all of them."""
    return bool(finite_flag(loss, components))


def describe_nonfinite(loss: torch.Tensor, components: Mapping[str, torch.Tensor], batch) -> str:
    """E.g. "L_forward=nan, L_inv_enc=inf (total loss nan); batch: max |fields| 1e+30, max |targets| 1.3"."""
    loss, components = loss.detach(), {name: value.detach() for name, value in components.items()}
    bad = [f"{name}={float(value)}" for name, value in components.items() if not torch.isfinite(value).all()]
    text = ", ".join(bad) + f" (total loss {float(loss)})" if bad else f"the total loss {float(loss)}"
    # The inputs' range points at the cause: extreme (or, past the encoder's own checks, NaN) values.
    ranges = []
    for key in ("fields", "targets", "latents"):
        value = batch.get(key) if isinstance(batch, Mapping) else None
        if isinstance(value, torch.Tensor) and value.is_floating_point() and value.numel():
            finite = torch.isfinite(value)
            if not bool(finite.all()):
                ranges.append(f"{int((~finite).sum())} non-finite {key}")
            else:
                ranges.append(f"max |{key}| {float(value.abs().max()):.3g}")
    return text + (f"; batch: {', '.join(ranges)}" if ranges else "")
