"""Every error a user can meet: a mistake in a config, a data file or a checkpoint.

Entry points print their message and exit non-zero, without a traceback; anything else is a bug and
keeps its traceback. Each message names what is wrong and the fix. A run stopped by SIGTERM or SIGINT
(:func:`interrupting_signal`) is no error of either kind: it exits ``128 + signal`` and says how to continue.
Every Python warning the package itself gives is a :class:`UPTWarning` (tests turn them into errors).
"""

from __future__ import annotations

import signal


class UPTWarning(UserWarning):
    """A warning of this package (not of Lightning or torch): ``-W error::upt_lightning.errors.UPTWarning``
    turns them into errors, as the tests do (pyproject.toml), and a filter can silence just these."""


class ConfigError(ValueError):
    """An impossible configuration value; the message names the config key and the fix."""


class NonFiniteLossError(RuntimeError):
    """A training loss went NaN or Inf (``nan_policy=raise``); the message names the step, the batch and the
    loss components. Usually a too high learning rate or bad data: a user error, reported without traceback."""


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: unreadable, of another kind, or not matching the config/data."""


class DataError(ValueError):
    """A data file, or a request for its contents, does not fit what the library can read."""


class DataFileNotFoundError(DataError, FileNotFoundError):
    """The data file does not exist; caught by ``except DataError`` and ``FileNotFoundError``."""


def interrupting_signal(error: BaseException) -> signal.Signals | None:
    """SIGTERM or SIGINT when ``error`` ends a run that signal stopped, else None (exit with ``128 + signal``).

    Lightning 2.6 ends a Trainer call on SIGTERM with ``SIGTERMException``, a ``SystemExit`` without a code:
    left alone, the process would exit 0 and a scheduler would take the pre-empted run for a finished one.
    On Ctrl-C it calls ``sys.exit(1)`` while handling the ``KeyboardInterrupt``, which is then the exit's context.
    """
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    if isinstance(error, SIGTERMException):
        return signal.SIGTERM
    if isinstance(error, KeyboardInterrupt) or (
            isinstance(error, SystemExit) and isinstance(error.__context__, KeyboardInterrupt)):
        return signal.SIGINT
    return None


def _user_error_types() -> tuple[type[BaseException], ...]:
    return ConfigError, CheckpointError, DataError, FileNotFoundError, NonFiniteLossError


def is_user_error(error: BaseException) -> bool:
    """True for mistakes in configs, data files or checkpoints that a message explains fully."""
    return isinstance(error, _user_error_types())


def user_error_message(error: BaseException) -> str | None:
    """The message to print for a user error, None for anything else (a bug: keep its traceback).

    Under ``ddp_spawn`` an error raised in a worker reaches the launching process as torch's
    ``ProcessRaisedException``, which holds only the worker's formatted traceback. The message
    of a user error is recovered from that text, so it is reported the same way as on one process.
    """
    if is_user_error(error):
        return str(error)
    from torch.multiprocessing import ProcessRaisedException

    if isinstance(error, ProcessRaisedException):
        return _worker_user_error(str(error))
    return None


def _worker_user_error(trace: str) -> str | None:
    """The message of the last exception in a formatted traceback, when that exception is a user error.

    ``traceback.format_exc`` ends with the last exception of a chain: a "Traceback (most recent call
    last):" line, indented frame lines, then ``<module>.<Class>: <message>`` (the message may run over
    several lines, and builtins have no module).
    """
    lines = trace.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last):")]
    if not starts:
        return None
    body = lines[starts[-1] + 1:]
    first = next((i for i, line in enumerate(body) if line and not line[0].isspace()), None)
    if first is None:
        return None
    name, sep, message = body[first].partition(": ")
    if not sep or _exception_class(name) is None:
        return None
    return "\n".join([message, *body[first + 1:]]).rstrip()


def _exception_class(name: str) -> type[BaseException] | None:
    """The user error class a traceback names (``upt_lightning.errors.ConfigError``), else None."""
    module, _, qualname = name.rpartition(".")
    for cls in _user_error_types():
        if module in ("", "builtins") and qualname == cls.__name__:
            return cls
        if module.startswith("upt_lightning") and module == cls.__module__ and qualname == cls.__qualname__:
            return cls
    return None
