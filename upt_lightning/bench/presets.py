"""Model sizes of the benchmarks: the Hydra presets in ``conf/model`` (``small``: the default
experiment, ``tiny``: the quick runs), so a benchmark measures the configuration that is trained.
Kept free of Lightning imports: the decoder benchmark loads it in fresh processes."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
FIELDS = {"u": 1, "v": 1}


def load_model_preset(name: str) -> dict:
    """``conf/model/<name>.yaml`` as a dict (latent_tokens, latent_dim, grid_encoder, mesh_encoder,
    decoder, operator)."""
    path = CONF_DIR / "model" / f"{name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(
            f"model preset {path} not found: run the benchmarks from a source checkout of upt_lightning "
            f"(pip install -e .), whose conf/ directory holds the model presets"
        )
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)
