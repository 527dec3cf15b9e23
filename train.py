"""Train and evaluate a UPT surrogate: `python train.py +experiment=burgers_upt`.

Stage 1 trains the autoencoder (or reuses a cached one), stage 2 the latent operator; the test
set is then evaluated and a summary, plots and results.json are written into the run directory.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from upt_lightning.runtime.console import lightning_logs_through_root, quiet_lightning
from upt_lightning.errors import user_error_message

quiet_lightning()  # at import: spawned DDP workers import this file too


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    lightning_logs_through_root()  # Hydra's handlers print each Lightning record, once
    from upt_lightning.pipeline import run_experiment

    try:
        results = run_experiment(cfg)
    except Exception as error:
        message = user_error_message(error)  # also a user error raised in a ddp_spawn worker
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
    return results.get("objective")


if __name__ == "__main__":
    main()
