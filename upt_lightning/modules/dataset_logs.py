"""Metrics of a multi-dataset model: one set per dataset under ``<stage>/<dataset>/``, plus their mean."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


def per_dataset_logs(
    stage: str, names: Sequence[str], compute: Callable[[str], dict[str, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """``compute(name)`` gives one dataset's ``{f"{stage}/<metric>": value}``; returns every dataset's values as
    ``{stage}/<name>/<metric>`` and, for each metric all datasets report, their mean as ``{stage}/<metric>``.

    The mean is what a sweep objective (``val/rollout_nrmse_h10``) and the summary's headline read; metrics
    only some datasets have (per-channel errors, conserved quantities) appear per dataset only.
    ``compute`` is called for every name in order on every rank: it may sync across processes.
    """
    prefix = f"{stage}/"
    per_name = {}
    for name in names:
        values = compute(name)
        per_name[name] = {key.removeprefix(prefix): value for key, value in values.items()}
    out = {f"{prefix}{name}/{key}": value for name, values in per_name.items() for key, value in values.items()}
    common = set.intersection(*(set(values) for values in per_name.values())) if per_name else set()
    for key in sorted(common):
        out[f"{prefix}{key}"] = torch.stack([per_name[name][key].float().reshape(()) for name in names]).mean()
    return out
