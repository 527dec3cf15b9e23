"""The ``upt`` console script: the training stages through Lightning's LightningCLI.

    upt fit --config conf/cli/burgers_autoencoder.yaml                     # stage 1
    upt fit --config conf/cli/burgers_upt.yaml \\
        --model.init_args.autoencoder_ckpt=<stage-1 checkpoint>             # stage 2
    upt validate --config conf/cli/burgers_upt.yaml --ckpt_path <checkpoint>
    upt test --config conf/cli/burgers_upt.yaml --ckpt_path <checkpoint>
    upt fit --config conf/cli/burgers_upt.yaml --print_config
    upt fit --config conf/cli/burgers_autoencoder.yaml --init_from=<trained checkpoint>   # fine-tuning

The model is any :class:`UPTModuleBase` (``AutoencoderModule``, ``OperatorModule``) and the data any
:class:`TrajectoryDataModule`, both chosen by ``class_path`` in the config. The stage-1 model's
``field_channels``, ``coord_dim`` and ``grid_shape`` are read from the data; stage 2 takes everything
from its autoencoder checkpoint. validate/test also take the checkpoints ``train.py`` writes (give the data
file that run trained on). Mistakes in configs, data files and checkpoint paths end with a one-line
``upt: error: ...`` and exit status 2; a run stopped by SIGTERM or Ctrl-C exits 143 or 130 and says how
to continue it.
"""

from __future__ import annotations

import inspect
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from upt_lightning import __version__
from upt_lightning.runtime.console import quiet_lightning

quiet_lightning()  # at import: the `upt` script's spawned DDP workers import this module too

# model constructor argument -> datamodule attribute it is read from
DATA_LINKS = {"field_channels": "field_spec", "coord_dim": "coord_dim", "grid_shape": "grid_shape"}
# ckpt_path values Lightning resolves itself rather than reading a file
SPECIAL_CKPT_PATHS = ("best", "last", "hpc", "registry")
# checkpoint kind (runtime/checkpoints.py) -> the class LightningCLI builds from it
MODULE_CLASSES = {"autoencoder": "upt_lightning.modules.AutoencoderModule",
                  "operator": "upt_lightning.modules.OperatorModule"}
DESCRIPTION = (
    "Universal Physics Transformer surrogates of PDEs (LightningCLI). Stage 1: "
    "`upt fit --config conf/cli/burgers_autoencoder.yaml`; stage 2: `upt fit --config "
    "conf/cli/burgers_upt.yaml --model.init_args.autoencoder_ckpt=PATH`. Hydra entry point: "
    "`python train.py +experiment=burgers_upt`."
)


def ready_datamodule(datamodule):
    """Make sure the data file exists (generating a built-in one) and the datamodule is set up.

    The stage-1 model's constructor needs the data's fields and grid before the Trainer starts, so
    the datamodule's own ``prepare_data`` and ``setup`` run early; both are idempotent and the
    Trainer's later calls reuse the result. In a multi-process launch only global rank 0 may
    generate a file: another rank would race it and could read a half-written file.
    """
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    from upt_lightning.errors import DataFileNotFoundError

    path = Path(datamodule.path)
    if not path.exists() and rank_zero_only.rank != 0:
        raise DataFileNotFoundError(
            f"data file {path} does not exist on rank {rank_zero_only.rank}: generate it before a "
            "multi-process launch (run the same command once on one process)"
        )
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def data_attribute(name: str) -> Callable[[Any], Any]:
    """A link function: datamodule -> its attribute ``name`` after setup, as plain YAML types."""

    def read(datamodule):
        value = getattr(ready_datamodule(datamodule), name)
        # a list round-trips through YAML configs and checkpoints, a tuple does not
        return list(value) if isinstance(value, tuple) else value

    read.__name__ = f"data_{name}"
    return read


def check_ckpt_path(ckpt_path: str | None) -> None:
    """A missing, unreadable or unsafe checkpoint file is a user error; say so before any model is built.

    The file is read with ``weights_only=True`` (:func:`read_checkpoint`): one holding other pickled
    objects is refused without running them.
    """
    if ckpt_path is None or ckpt_path in SPECIAL_CKPT_PATHS or "://" in str(ckpt_path):
        return
    if not Path(ckpt_path).is_file():
        raise FileNotFoundError(f"--ckpt_path {ckpt_path} does not exist: give the path of a .ckpt file")
    from upt_lightning.runtime.checkpoints import read_checkpoint

    read_checkpoint(ckpt_path, "--ckpt_path", mmap=True)


def unparsable_checkpoint_message(ckpt_path: str, error: Exception) -> str:
    """What to do about a checkpoint whose hyperparameters LightningCLI cannot parse as a model's arguments."""
    from upt_lightning.runtime.checkpoints import KIND_NAMES, checkpoint_kind, read_checkpoint

    checkpoint = read_checkpoint(ckpt_path, "--ckpt_path", mmap=True)
    class_path = checkpoint["hyper_parameters"].get("_class_path")
    if class_path is not None:
        reason = str(error).split("Given value", 1)[0].strip()  # jsonargparse appends every hyperparameter
        return f"--ckpt_path {ckpt_path}: its hyperparameters do not fit {class_path}: {reason}"
    kind = checkpoint_kind(checkpoint)
    if kind not in MODULE_CLASSES:
        return (f"--ckpt_path {ckpt_path} is {KIND_NAMES.get(kind, 'no UPT checkpoint')}: upt validate/test "
                "take stage-1 and stage-2 checkpoints of UPT only")
    # Checkpoints that train.py wrote before UPTModuleBase.on_save_checkpoint recorded the class.
    fix = (f"import torch; p={str(ckpt_path)!r}; c=torch.load(p, weights_only=True); "
           f"c['hyper_parameters']['_class_path']={MODULE_CLASSES[kind]!r}; torch.save(c, p)")
    return f"--ckpt_path {ckpt_path} does not name its model class; add it once with: python -c \"{fix}\""


def continue_hint(subcommand: str, callbacks) -> str:
    """How to continue a ``subcommand`` that a signal stopped: a fit from its newest checkpoint."""
    if subcommand != "fit":
        return "rerun the same command"
    newest = [callback.best_model_path for callback in callbacks if callback.monitor is None]
    newest += [callback.last_model_path for callback in callbacks]
    path = next((p for p in newest if p and Path(p).is_file()), None)
    if path is None:
        return "no checkpoint was written yet: rerun the same command"
    return f"rerun the same command with --ckpt_path {path} to continue"


class RunInterrupted(SystemExit):
    """A subcommand stopped by a signal: exits 128 + the signal's number; ``hint`` says how to continue."""

    def __init__(self, signum: signal.Signals, hint: str) -> None:
        super().__init__(128 + signum)
        self.signum = signum
        self.hint = hint


def describe_root_cause(error: BaseException) -> str:
    """The message of the innermost exception in ``error``'s ``raise ... from`` chain."""
    while error.__cause__ is not None:
        error = error.__cause__
    return str(error) if isinstance(error, (ValueError, OSError)) else f"{type(error).__name__}: {error}"


def checkpoint_report(callbacks) -> list[str]:
    """Lines naming the checkpoints the ModelCheckpoint ``callbacks`` wrote, e.g. for stage 2's input.

    "best checkpoint (val/nrmse): PATH" for a monitored callback, "latest checkpoint: PATH" for an
    unmonitored one (it keeps the newest epoch), "last checkpoint: PATH" for a ``save_last`` copy.
    """
    lines = []
    for callback in callbacks:
        if callback.best_model_path:
            kind = f"best checkpoint ({callback.monitor})" if callback.monitor else "latest checkpoint"
            lines.append(f"{kind}: {callback.best_model_path}")
        if callback.last_model_path:
            lines.append(f"last checkpoint: {callback.last_model_path}")
    return lines


def check_init_from(subcommand: str, init_from: str | None, freeze_epochs: int | None) -> None:
    """``--init_from`` names a UPT checkpoint of this library and is given to fit only; ``--init_from_freeze_epochs``
    needs it."""
    from upt_lightning.errors import ConfigError
    from upt_lightning.models.init_from import check_init_checkpoint

    if freeze_epochs is not None and freeze_epochs < 0:
        raise ConfigError(f"--init_from_freeze_epochs={freeze_epochs} must be >= 0 (0: no freezing)")
    if not init_from:
        if freeze_epochs:
            raise ConfigError("--init_from_freeze_epochs freezes the trunks that --init_from loads: give --init_from=CKPT")
        return
    if subcommand != "fit":
        raise ConfigError(f"--init_from starts a fit from a trained model's weights; `upt {subcommand}` evaluates "
                          "--ckpt_path: drop --init_from")
    check_init_checkpoint(init_from, "--init_from")


def start_from(model, trainer, init_from: str, freeze_epochs: int) -> None:
    """Load ``model``'s parts (:func:`~upt_lightning.models.init_from.module_parts`) from ``init_from`` and, with
    ``freeze_epochs``, freeze their trunks for that many epochs (a FreezeTrunk callback)."""
    from upt_lightning.callbacks import FreezeTrunk
    from upt_lightning.models.init_from import init_module_from, module_parts

    parts = module_parts(model)
    init_module_from(model, init_from, parts)
    if freeze_epochs:
        trainer.callbacks.append(FreezeTrunk(int(freeze_epochs), parts))


def drop_unaccepted_link_values(model) -> None:
    """Remove data-link values from ``model``'s hyperparameters when its constructor lacks them.

    jsonargparse skips a link whose target the chosen class does not have (OperatorModule has no
    ``field_channels``), but Lightning still records the computed value among the hyperparameters;
    a checkpoint holding it could not be loaded again.
    """
    accepted = inspect.signature(type(model).__init__).parameters
    for key in DATA_LINKS:
        if key not in accepted:
            model.hparams.pop(key, None)
            # the copy the logger writes to hparams.yaml; Lightning exposes it read-only
            model._hparams_initial.pop(key, None)


def build_cli_class():
    """The LightningCLI subclass (imported lazily: `upt --version` must not import torch)."""
    from jsonargparse import ArgumentError
    from lightning.pytorch.cli import LightningCLI

    from upt_lightning.errors import CheckpointError, ConfigError, interrupting_signal

    class UPTLightningCLI(LightningCLI):
        @staticmethod
        def subcommands() -> dict[str, set[str]]:
            # No predict: the modules define no predict_step; OperatorModule.rollout does inference.
            return {name: skip for name, skip in LightningCLI.subcommands().items() if name != "predict"}

        def setup_parser(self, add_subcommands, main_kwargs, subparser_kwargs) -> None:
            super().setup_parser(add_subcommands, main_kwargs, subparser_kwargs)
            self.parser.add_argument("--version", action="version", version=f"upt_lightning {__version__}")

        def add_arguments_to_parser(self, parser) -> None:
            for argument, attribute in DATA_LINKS.items():
                parser.link_arguments(
                    "data", f"model.init_args.{argument}", compute_fn=data_attribute(attribute),
                    apply_on="instantiate",
                )
            # train.py's init_from and init_from_freeze_epochs (docs/multiphysics.md, fine-tuning), for fit.
            parser.add_argument("--init_from", type=str | None, default=None,
                                help="fit: start the model from a trained UPT checkpoint's weights (the shared trunks; "
                                     "stems, heads and normaliser of the dataset with the same fields)")
            parser.add_argument("--init_from_freeze_epochs", type=int, default=0,
                                help="fit with --init_from: epochs that train only the stems and heads")

        def parse_arguments(self, parser, args) -> None:
            super().parse_arguments(parser, args)
            # Before LightningCLI reads the checkpoint's hyperparameters (right after parsing).
            subcommand = self.config.get("subcommand")
            if subcommand is not None:
                check_ckpt_path(self.config[subcommand].get("ckpt_path"))
                check_init_from(subcommand, self.config[subcommand].get("init_from"),
                                self.config[subcommand].get("init_from_freeze_epochs"))
                if "weights_only" in self.config[subcommand] and self.config[subcommand].weights_only is None:
                    # torch < 2.6 would default to full unpickling: load weights-only unless told otherwise
                    self.config[subcommand].weights_only = True

        def _parse_ckpt_path(self) -> None:
            # On a mismatch jsonargparse would print its usage and every hyperparameter, then exit: have it
            # raise instead, and say what to do.
            subcommand = self.config.get("subcommand")
            ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
            if not ckpt_path or not Path(ckpt_path).is_file():
                return
            hparams = checkpoint_init_args(ckpt_path)
            if not hparams:
                return
            exit_on_error, self.parser.exit_on_error = self.parser.exit_on_error, False
            try:
                self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)
            except ArgumentError as error:
                ckpt_path = self.config[self.config.subcommand].ckpt_path
                raise CheckpointError(unparsable_checkpoint_message(ckpt_path, error)) from None
            finally:
                self.parser.exit_on_error = exit_on_error

        def _run_subcommand(self, subcommand: str) -> None:
            try:
                super()._run_subcommand(subcommand)
            except (SystemExit, KeyboardInterrupt) as stop:
                signum = interrupting_signal(stop)
                if signum is None:
                    raise
                raise RunInterrupted(signum, continue_hint(subcommand, self.trainer.checkpoint_callbacks)) from stop

        def instantiate_classes(self) -> None:
            try:
                super().instantiate_classes()
            except (ValueError, TypeError, FileNotFoundError) as error:
                # Constructors validate their arguments, so what they reject is a configuration
                # mistake; jsonargparse wraps their message in its own, report it unwrapped.
                raise ConfigError(describe_root_cause(error)) from error
            drop_unaccepted_link_values(self.model)

        def before_fit(self) -> None:
            settings = self.config[self.subcommand]
            if settings.get("init_from"):
                start_from(self.model, self.trainer, settings.init_from, settings.get("init_from_freeze_epochs") or 0)

        def after_fit(self) -> None:
            if self.trainer.is_global_zero:
                for line in checkpoint_report(self.trainer.checkpoint_callbacks):
                    print(line)

    return UPTLightningCLI


# Init arguments of removed options, with the value that meant "off": checkpoints of earlier versions store them
# among their hyperparameters (docs/accuracy.md, "Measured, not kept").
REMOVED_INIT_ARGS = {"input_noise": 0.0}


def checkpoint_init_args(ckpt_path: str | Path) -> dict[str, Any]:
    """A checkpoint's hyperparameters as LightningCLI parses them into the model's init arguments
    (``{"class_path", "dict_kwargs"}`` when it names its class), without removed options left at "off"; one
    that was on is refused, as the model would not predict as it was trained to."""
    import torch

    from upt_lightning.errors import CheckpointError

    from upt_lightning.runtime.legacy_hparams import grouped_hparams

    hparams = dict(torch.load(ckpt_path, weights_only=True, map_location="cpu").get("hyper_parameters") or {})
    hparams = grouped_hparams(hparams)  # an earlier version's flat loss, sampling and optimiser settings
    hparams.pop("_instantiator", None)
    for key, off in REMOVED_INIT_ARGS.items():
        if key in hparams and hparams.pop(key) != off:
            raise CheckpointError(f"{ckpt_path} was trained with {key} on, an option that was removed "
                                  "(docs/accuracy.md, \"Measured, not kept\"): evaluate it with the version that "
                                  "trained it")
    if "_class_path" in hparams:
        return {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
    return hparams


def main(argv: list[str] | None = None) -> int:
    """Run ``upt`` on ``argv`` (default: the command line); without arguments print the help."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args == ["--version"]:  # answered before torch and Lightning are imported (seconds)
        print(f"upt_lightning {__version__}")
        return 0
    # LightningCLI reads sys.argv itself, and warns when it is given args as well
    cli_args = None if argv is None and args else (args or ["--help"])

    from upt_lightning.data.datamodules import TrajectoryDataModule
    from upt_lightning.errors import user_error_message
    from upt_lightning.modules.base import UPTModuleBase
    from upt_lightning.runtime.allocator import keep_freed_memory

    keep_freed_memory()  # as train.py does (its keep_freed_memory key): full-grid CPU decodes about 2x faster
    try:
        build_cli_class()(
            model_class=UPTModuleBase,
            datamodule_class=TrajectoryDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            seed_everything_default=0,
            auto_configure_optimizers=False,
            parser_kwargs={"description": DESCRIPTION},
            args=cli_args,
        )
    except RunInterrupted as stop:
        print(f"upt: interrupted by {stop.signum.name}: {stop.hint}", file=sys.stderr)
        return stop.code
    except Exception as error:
        message = user_error_message(error)  # also a user error raised in a ddp_spawn worker
        if message is None:
            raise
        print(f"upt: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
