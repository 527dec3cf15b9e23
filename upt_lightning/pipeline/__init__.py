"""The train.py pipeline: data -> stage 1 (cached) -> stage 2 -> test -> summary, plots, results.json."""

from upt_lightning.pipeline.run import run_experiment

__all__ = ["run_experiment"]
