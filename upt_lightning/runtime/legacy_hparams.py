"""Checkpoints of earlier versions listed the loss, query-sampling and optimiser settings among a module's
hyperparameters one by one (``lambda_inv_enc``, ``num_queries``, ``lr``, ...) and the stage-1 source of an
operator apart (``autoencoder_source``); the modules now take each group as one argument (``loss``,
``sampling``, ``optim``) and the source inside ``autoencoder``. :func:`legacy_init_arguments` gives the grouped
arguments of such a checkpoint, so ``load_from_checkpoint`` and ``upt test --ckpt_path`` read it as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

LOSS_KEYS = ("use_inverse_losses", "lambda_forward", "lambda_inv_enc", "lambda_inv_dec", "lambda_rollout",
             "lambda_spectral", "lambda_recon", "lambda_conservation", "inverse_loss_frequency",
             "inverse_loss_warmup_epochs", "inverse_loss_max_weight", "sampled_inverse_gradient")
# old hyperparameter -> (group, key in the group)
LEGACY_KEYS: dict[str, tuple[str, str]] = {
    "num_queries": ("sampling", "num_queries"),
    "query_strategy": ("sampling", "strategy"),
    "per_sample_queries": ("sampling", "per_sample"),
    **{key: ("optim", key) for key in ("lr", "optimizer", "scheduler", "weight_decay", "warmup_fraction",
                                        "min_lr_ratio", "betas", "muon_lr_ratio")},
    **{key: ("loss", key) for key in LOSS_KEYS},
}


def legacy_init_arguments(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """The grouped init arguments (``loss``, ``sampling``, ``optim``, ``autoencoder``) that replace the flat
    settings of an earlier version's ``hparams``; empty for a checkpoint of this version."""
    grouped: dict[str, dict[str, Any]] = {}
    for old, (group, key) in LEGACY_KEYS.items():
        if old in hparams and group not in hparams:
            grouped.setdefault(group, {})[key] = hparams[old]
    loss = grouped.get("loss")
    if loss is not None and "inverse_loss_max_weight" in loss:
        # Earlier versions let a scheduled weight exceed the cap, which the curriculum (attached by train.py and the
        # CLI configs) then applied instead; the loss now refuses that, so the weight is stored as trained: capped.
        for key in ("lambda_inv_enc", "lambda_inv_dec", "lambda_conservation"):
            if key in loss and loss[key] > loss["inverse_loss_max_weight"]:
                loss[key] = loss["inverse_loss_max_weight"]
    source = hparams.get("autoencoder_source")
    if source is not None and isinstance(hparams.get("autoencoder"), Mapping) and "source" not in hparams["autoencoder"]:
        grouped["autoencoder"] = {**hparams["autoencoder"], "source": source}
    return grouped


def grouped_hparams(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """``hparams`` with an earlier version's flat settings replaced by their groups (:func:`legacy_init_arguments`)."""
    grouped = legacy_init_arguments(hparams)
    moved = [old for old, (group, _) in LEGACY_KEYS.items() if group in grouped]
    out = {key: value for key, value in hparams.items() if key not in moved and key != "autoencoder_source"}
    return {**out, **grouped}
