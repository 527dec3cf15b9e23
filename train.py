"""Train and evaluate a UPT surrogate: `python train.py +experiment=burgers_upt`.

Stage 1 trains the autoencoder (or reuses a cached one), stage 2 the latent operator; the test
set is then evaluated and a summary, plots and results.json are written into the run directory.
A mistake in the config, data or a checkpoint exits 2 with its message; a run stopped by SIGTERM
(a scheduler's pre-emption) or Ctrl-C exits 143 or 130 and says how to continue it.
"""

from __future__ import annotations

import logging
import signal
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from upt_lightning.runtime.console import lightning_logs_through_root, quiet_lightning
from upt_lightning.errors import interrupting_signal, user_error_message

quiet_lightning()  # at import: spawned DDP workers import this file too


def report_interrupt(signum: signal.Signals) -> None:
    """Say in train.log and on stderr that ``signum`` stopped the run, and how to continue it: the same
    command in the same run dir continues from its checkpoints (``resume=auto``, pipeline/resume.py)."""
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        where = f"hydra.sweep.dir={hydra_cfg.sweep.dir}"  # each job continues in its <sweep dir>/<job> dir
    else:
        where = f"hydra.run.dir={hydra_cfg.runtime.output_dir}"
    message = (f"interrupted by {signum.name} before the results were written; to continue from the run's "
               f"checkpoints, rerun the same command with {where}")
    logging.getLogger("upt_lightning.pipeline").error(message)
    print(f"error: {message}", file=sys.stderr)


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
    except (SystemExit, KeyboardInterrupt) as stop:
        signum = interrupting_signal(stop)
        if signum is None:
            raise
        report_interrupt(signum)
        sys.exit(128 + signum)  # what a shell reports for a process the signal killed
    return results.get("objective")


if __name__ == "__main__":
    main()
