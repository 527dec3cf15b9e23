"""Reading checkpoints safely (``weights_only=True``: nothing in a file can run code).

Every problem with a checkpoint file is a :class:`CheckpointError` naming the file and the fix, so
the entry points report it as a user's mistake instead of a traceback from inside torch.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from upt_lightning.errors import CheckpointError

ARCH_KEYS = ("field_channels", "coord_dim", "grid_shape", "encoder", "decoder", "latent_tokens", "latent_dim",
             "datasets")
STAGE1_PREFIXES = ("encoder.", "decoder.", "normalizer.")
KIND_NAMES = {"autoencoder": "a stage-1 (autoencoder) checkpoint", "operator": "a stage-2 (OperatorModule) checkpoint",
              "fno": "an FNO baseline checkpoint", "gino": "a GINO baseline checkpoint"}


def read_checkpoint(path: str | Path, what: str = "checkpoint", mmap: bool = False) -> dict[str, Any]:
    """The Lightning checkpoint dict at ``path``, loaded with ``weights_only=True`` on the CPU.

    ``weights_only`` unpickles only tensors and plain Python types: a file holding any other
    object (which could run code while being unpickled) is refused, not executed. ``mmap`` maps
    the tensors instead of reading them (cheap checks of large files). ``what`` names the file's
    role in messages (e.g. "autoencoder_ckpt").
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as error:  # torch raises several types for truncated, corrupt, foreign or unsafe files
        unsafe = re.search(r"GLOBAL (\S+) was not an allowed global", str(error))
        if unsafe:
            raise CheckpointError(
                f"{what} {path} was refused: it holds a pickled {unsafe.group(1)}, not only tensors and plain "
                "types, and unpickling it could run code; use a checkpoint written by this library"
            ) from None
        raise CheckpointError(
            f"{what} {path} is not a readable PyTorch checkpoint ({type(error).__name__}); it may be truncated "
            "or another kind of file: give a .ckpt file that training wrote"
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "hyper_parameters" not in checkpoint:
        raise CheckpointError(f"{what} {path} is not a Lightning checkpoint with hyper_parameters and state_dict")
    return checkpoint


def checkpoint_kind(checkpoint: dict[str, Any]) -> str:
    """"autoencoder" (stage 1), "operator" (stage 2), "fno", "gino" (the baselines) or "unknown", judged from the
    hyperparameters."""
    hparams = checkpoint.get("hyper_parameters") or {}
    if "operator" in hparams and "autoencoder" in hparams:
        return "operator"
    if "latent_grid" in hparams and "radius" in hparams:
        return "gino"
    if "n_modes" in hparams and "hidden_channels" in hparams:
        return "fno"
    if "field_channels" in hparams and "coord_dim" in hparams:
        return "autoencoder"
    return "unknown"


def load_autoencoder_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Return (architecture hyperparameters, state_dict of encoder/decoder/normaliser) of a stage-1 checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"autoencoder checkpoint {path} does not exist: train stage 1 first or fix autoencoder_ckpt"
        )
    checkpoint = read_checkpoint(path, "autoencoder checkpoint")
    kind = checkpoint_kind(checkpoint)
    if kind != "autoencoder":
        found = KIND_NAMES.get(kind, "no stage-1 hyperparameters")
        raise CheckpointError(
            f"{path} is not an AutoencoderModule (stage-1) checkpoint: found {found}; give the checkpoint "
            "that stage 1 wrote (stage1/checkpoints/ or the stage-1 cache)"
        )
    hparams = dict(checkpoint["hyper_parameters"])
    arch = {key: hparams[key] for key in ARCH_KEYS if key in hparams}
    state = {k: v for k, v in checkpoint["state_dict"].items() if k.startswith(STAGE1_PREFIXES)}
    if not any(k.startswith("encoder.") for k in state):
        raise CheckpointError(f"{path} holds no encoder weights: is it an AutoencoderModule checkpoint?")
    return arch, state


def adopt_autoencoder_state(module, state: dict[str, torch.Tensor]) -> None:
    """Load a stage-1 state (from :func:`load_autoencoder_checkpoint`) into ``module``'s ``encoder``,
    ``decoder`` and ``normalizer``, strictly: a missing or extra weight is an error, not a silent partial load."""
    for name in (prefix.rstrip(".") for prefix in STAGE1_PREFIXES):
        prefix = f"{name}."
        sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        getattr(module, name).load_state_dict(sub, strict=True)
