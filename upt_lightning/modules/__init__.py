"""LightningModules: stage 1 (autoencoder) and stage 2 (latent operator)."""

from upt_lightning.modules.autoencoder import AutoencoderModule
from upt_lightning.modules.operator import OperatorModule

__all__ = ["AutoencoderModule", "OperatorModule"]
