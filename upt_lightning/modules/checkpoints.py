"""Reading stage-1 checkpoints safely (``weights_only=True``: nothing in a file can run code)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

ARCH_KEYS = ("field_channels", "coord_dim", "grid_shape", "encoder", "decoder", "latent_tokens", "latent_dim")
STAGE1_PREFIXES = ("encoder.", "decoder.", "normalizer.")


def load_autoencoder_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Return (architecture hyperparameters, state_dict of encoder/decoder/normaliser) of a stage-1 checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"autoencoder checkpoint {path} does not exist: train stage 1 first or fix autoencoder_ckpt"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or foreign files
        raise ValueError(f"{path} is not a readable PyTorch checkpoint ({type(error).__name__}: {error})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "hyper_parameters" not in checkpoint:
        raise ValueError(f"{path} is not a Lightning checkpoint with hyper_parameters and state_dict")
    hparams = dict(checkpoint["hyper_parameters"])
    missing = [key for key in ("field_channels", "coord_dim") if key not in hparams]
    if missing:
        raise ValueError(
            f"{path} lacks the stage-1 hyperparameters {missing}: is it an AutoencoderModule checkpoint?"
        )
    arch = {key: hparams[key] for key in ARCH_KEYS if key in hparams}
    state = {k: v for k, v in checkpoint["state_dict"].items() if k.startswith(STAGE1_PREFIXES)}
    if not any(k.startswith("encoder.") for k in state):
        raise ValueError(f"{path} holds no encoder weights: is it an AutoencoderModule checkpoint?")
    return arch, state
