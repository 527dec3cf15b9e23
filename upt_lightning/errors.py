"""Errors that report a user's mistake: entry points print their message and exit non-zero, no traceback."""

from __future__ import annotations


class ConfigError(ValueError):
    """An impossible configuration value; the message names the config key and the fix."""


class NonFiniteLossError(RuntimeError):
    """A training loss went NaN or Inf (``nan_policy=raise``); the message names the step, the batch and the
    loss components. Usually a too high learning rate or bad data: a user error, reported without traceback."""


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: unreadable, of another kind, or not matching the config/data."""


def is_user_error(error: BaseException) -> bool:
    """True for mistakes in configs, data files or checkpoints that a message explains fully."""
    from upt_lightning.data.validation import DataError

    return isinstance(error, (ConfigError, CheckpointError, DataError, FileNotFoundError, NonFiniteLossError))
