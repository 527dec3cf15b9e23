"""Start a new model from a trained one's weights (``init_from``): which tensors to copy, and why the others stay.

Weights are matched by name, part by part (``normalizer``, ``encoder``, ``decoder``, ``operator``):

* *Stems and heads* are a dataset's own: its normaliser, its encoder's input embedding (a grid's patch
  embedding, a mesh's supernode stem) and its decoder's output heads. They are copied only from the
  checkpoint's dataset whose field names (in order) equal the target dataset's; a checkpoint of one dataset
  counts as one dataset. Without such a dataset they stay freshly initialised (and the normaliser then takes
  the new data's statistics).
* *Trunks* are shared by all datasets: the encoder's transformer blocks, final norm and pooling
  (:data:`~upt_lightning.models.multi_dataset.ENCODER_TRUNK`), the decoder's query embedding, latent projection,
  cross-attention blocks and norm (:data:`~upt_lightning.models.multi_dataset.DECODER_TRUNK`) and the whole
  operator. They are always copied (from the matching dataset's entry of a multi-dataset checkpoint, else from
  the first that has them).
* The operator's *dataset conditioning* (``dataset_embed``, one row per dataset) maps like a stem, row by row.
  A one-dataset model has none: the matching dataset's row of a multi-dataset checkpoint is folded into the
  bias of the time-step MLP's last layer (the conditioning vector is their sum, so the operator conditions
  exactly as it did on that dataset).

A tensor that is to be copied but whose shape differs from the checkpoint's (a trunk of another width) raises
:class:`CheckpointError` naming it, both shapes and the fix. A tensor the checkpoint lacks stays fresh and is
listed. Everything here is pure: state dicts in, an :class:`InitPlan` out; :func:`init_module_from` applies it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from upt_lightning.errors import CheckpointError
from upt_lightning.models.multi_dataset import DECODER_TRUNK, ENCODER_TRUNK
from upt_lightning.runtime.checkpoints import KIND_NAMES, checkpoint_kind, read_checkpoint

log = logging.getLogger("upt_lightning.runtime")

PARTS = ("normalizer", "encoder", "decoder", "operator")
AUTOENCODER_PARTS = PARTS[:3]
# Parts that hold one module per dataset in a multi-dataset model (DatasetSwitch: ``<part>.parts.<name>.``).
SWITCHED = AUTOENCODER_PARTS
TRUNKS = {"encoder": ENCODER_TRUNK, "decoder": DECODER_TRUNK}
DATASET_EMBED = "operator.dataset_embed.weight"
# The last layer of LatentOperator.dt_embed: its output and the dataset embedding add up to the conditioning.
CONDITIONING_BIAS = "operator.dt_embed.2.bias"
# What init_from accepts: a stage-2 checkpoint (all four parts) or a stage-1 one (no operator).
KINDS = ("operator", "autoencoder")
LABELS = {("normalizer", "stem"): "normaliser", ("encoder", "stem"): "encoder stem",
          ("encoder", "trunk"): "encoder trunk", ("decoder", "trunk"): "decoder trunk",
          ("decoder", "stem"): "decoder heads", ("operator", "trunk"): "operator",
          ("operator", "conditioning"): "operator dataset conditioning"}


def split_key(key: str) -> tuple[str, str | None, str]:
    """``(part, dataset, rest)`` of a state-dict key: ``encoder.parts.burgers.blocks.0.x`` ->
    ``("encoder", "burgers", "blocks.0.x")``; ``encoder.blocks.0.x`` -> ``("encoder", None, "blocks.0.x")``."""
    part, _, rest = key.partition(".")
    if part in SWITCHED and rest.startswith("parts."):
        dataset, _, rest = rest[len("parts."):].partition(".")
        return part, dataset, rest
    return part, None, rest


def role_of(part: str, rest: str) -> str:
    """"trunk", "stem" (a dataset's own: normaliser, encoder stem, decoder heads) or "conditioning" (the operator's
    dataset embedding) for the tensor ``rest`` of ``part``."""
    if part == "operator":
        return "conditioning" if rest.startswith("dataset_embed.") else "trunk"
    if part in TRUNKS:
        return "trunk" if rest.split(".", 1)[0] in TRUNKS[part] else "stem"
    return "stem"


def in_frozen_trunk(name: str) -> bool:
    """Whether ``init_from_freeze_epochs`` freezes the parameter ``name``: the encoder's and decoder's trunks
    (:func:`role_of`) and the operator's transformer blocks; never stems, heads, normalisers, nor the operator's
    input/output projections, token positions and (time-step, dataset) conditioning."""
    part, _, rest = split_key(name)
    if part == "operator":
        return rest.startswith("blocks.")
    return part in TRUNKS and role_of(part, rest) == "trunk"


def fields_of(hparams: Mapping[str, Any]) -> dict[str | None, list[str]]:
    """``{dataset: field names}`` of a checkpoint's (or module's) hyperparameters; ``{None: names}`` for one
    dataset. Takes stage-1 hyperparameters or a stage-2 checkpoint's (their ``autoencoder`` entry)."""
    arch = hparams.get("autoencoder") or hparams
    datasets = arch.get("datasets")
    if datasets:
        return {str(name): list(spec["field_channels"]) for name, spec in datasets.items()}
    return {None: list(arch["field_channels"])}


@dataclass(frozen=True)
class DatasetMatch:
    """Which checkpoint dataset each target dataset takes its stems from.

    ``target``/``checkpoint``: ``{dataset: field names}`` in model order (key None: a one-dataset model);
    ``source``: ``{target dataset: checkpoint dataset}`` for the targets with a match only.
    """

    target: dict[str | None, list[str]]
    checkpoint: dict[str | None, list[str]]
    source: dict[str | None, str | None]

    def describe(self, dataset: str | None) -> str:
        fields = self.target[dataset]
        own = "this run's fields" if dataset is None else f"the fields of dataset {dataset!r}"
        if dataset in self.source:
            origin = self.source[dataset]
            where = "the checkpoint's" if origin is None else f"those of the checkpoint's dataset {origin!r}"
            return f"{own} {fields} are {where}"
        theirs = ", ".join(f"{name} {names}" if name is not None else f"{names}"
                           for name, names in self.checkpoint.items())
        return f"{own} {fields} match none of the checkpoint's ({theirs})"


def match_datasets(target: Mapping[str | None, Sequence[str]],
                   checkpoint: Mapping[str | None, Sequence[str]]) -> DatasetMatch:
    """Pair every target dataset with the first checkpoint dataset of the same field names (in order)."""
    target = {name: list(fields) for name, fields in target.items()}
    checkpoint = {name: list(fields) for name, fields in checkpoint.items()}
    source = {}
    for name, fields in target.items():
        found = [other for other, theirs in checkpoint.items() if theirs == fields]
        if found:
            source[name] = found[0]
    return DatasetMatch(target, checkpoint, source)


@dataclass
class InitPlan:
    """What :func:`plan_init` decided: ``state`` (target key -> tensor to load), the keys ``loaded`` and the
    ``fresh`` ones with the reason, and ``notes`` (the conditioning fold)."""

    state: dict[str, torch.Tensor] = field(default_factory=dict)
    loaded: list[str] = field(default_factory=list)
    fresh: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    match: DatasetMatch | None = None

    def groups(self, keys: Iterable[str]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for key in keys:
            part, dataset, rest = split_key(key)
            role = role_of(part, rest)
            label = LABELS[(part, role)]  # a trunk is one for all datasets: not named per dataset
            out.setdefault(label if dataset is None or role == "trunk" else f"{label} of {dataset!r}", []).append(key)
        return out

    def summary(self) -> str:
        """One paragraph: the dataset match, what was loaded, what stays fresh and why."""
        lines = [self.match.describe(name) for name in self.match.target] if self.match else []
        loaded = self.groups(self.loaded)
        fresh = self.groups(self.fresh)
        lines.append("loaded: " + (", ".join(
            label + (f" ({len(keys)} of {len(keys) + len(fresh[label])} tensors)" if label in fresh else "")
            for label, keys in loaded.items()) or "nothing"))
        reasons: dict[str, list[str]] = {}
        for label, keys in fresh.items():
            reasons.setdefault(self.fresh[keys[0]], []).append(label)
        lines.append("freshly initialised: " + ("; ".join(f"{', '.join(labels)} ({reason})"
                                                         for reason, labels in reasons.items()) or "nothing"))
        return "; ".join(lines + self.notes)


def _shape_error(what: str, key: str, source_key: str, target: torch.Tensor, saved: torch.Tensor) -> CheckpointError:
    return CheckpointError(
        f"{what}: {key} has shape {tuple(saved.shape)} in the checkpoint ({source_key}) but {tuple(target.shape)} in "
        "this model: the checkpoint was trained with other model settings. Use its model settings (the model preset "
        "it was trained with, e.g. model=small, or the width/depth/token keys that differ), or drop init_from to "
        "start from scratch"
    )


def plan_init(target: Mapping[str, torch.Tensor], checkpoint: Mapping[str, torch.Tensor], match: DatasetMatch,
              parts: Sequence[str] = PARTS, what: str = "init_from") -> InitPlan:
    """What to load into a model with state dict ``target`` from the checkpoint state dict ``checkpoint``.

    ``match`` (:func:`match_datasets`) pairs the model's datasets with the checkpoint's; only keys of ``parts``
    are considered (others are neither loaded nor listed). Raises :class:`CheckpointError` naming a tensor whose
    shape differs where it would be loaded; ``what`` opens that message (e.g. ``"init_from=PATH"``).
    """
    plan = InitPlan(match=match)
    order = list(match.checkpoint)
    multi_checkpoint = None not in match.checkpoint
    present = {key.partition(".")[0] for key in checkpoint}

    def source_key(part: str, dataset: str | None, rest: str) -> str:
        switched = part in SWITCHED and multi_checkpoint
        return f"{part}.parts.{dataset}.{rest}" if switched else f"{part}.{rest}"

    for key, value in target.items():
        part, dataset, rest = split_key(key)
        if part not in parts:
            continue
        role = role_of(part, rest)
        if role == "conditioning":
            continue  # row by row, below
        if part not in present:
            plan.fresh[key] = f"the checkpoint has no {part}" + (" (a stage-1 checkpoint)" if part == "operator" else "")
            continue
        matched = dataset in match.source
        if role == "stem" and not matched:
            plan.fresh[key] = "no checkpoint dataset has these fields"
            continue
        first = [match.source[dataset]] if matched else []
        candidates = first + [name for name in order if name not in first] if role == "trunk" else first
        found = next((source_key(part, name, rest) for name in candidates
                      if source_key(part, name, rest) in checkpoint), None)
        if found is None:
            plan.fresh[key] = "not in the checkpoint"
            continue
        saved = checkpoint[found]
        if tuple(saved.shape) != tuple(value.shape):
            raise _shape_error(what, key, found, value, saved)
        plan.state[key] = saved
        plan.loaded.append(key)
    if "operator" in parts and "operator" in present:
        _plan_conditioning(plan, target, checkpoint, match, what)
    return plan


def _plan_conditioning(plan: InitPlan, target: Mapping[str, torch.Tensor], checkpoint: Mapping[str, torch.Tensor],
                       match: DatasetMatch, what: str) -> None:
    """The operator's dataset embedding: row by row, or folded into the time-step bias of a one-dataset model."""
    saved = checkpoint.get(DATASET_EMBED)
    order = list(match.checkpoint)
    if DATASET_EMBED in target:
        rows = target[DATASET_EMBED].clone()
        if saved is not None and saved.shape[1:] != rows.shape[1:]:
            raise _shape_error(what, DATASET_EMBED, DATASET_EMBED, rows, saved)
        copied = []
        for index, name in enumerate(match.target):
            if saved is not None and name in match.source:
                rows[index] = saved[order.index(match.source[name])]
                copied.append(name)
        plan.state[DATASET_EMBED] = rows
        if copied:
            plan.loaded.append(DATASET_EMBED)
            plan.notes.append(f"operator dataset conditioning of {copied} copied from the matching datasets")
        fresh = [name for name in match.target if name not in copied]
        if fresh:
            reason = ("the checkpoint's operator is not conditioned on datasets" if saved is None
                      else f"no checkpoint dataset has the fields of {fresh}")
            if copied:
                plan.notes.append(f"operator dataset conditioning of {fresh} fresh ({reason})")
            else:
                plan.fresh[DATASET_EMBED] = reason
        return
    if saved is None:
        return
    # A one-dataset model from a multi-dataset checkpoint: fold the matching dataset's row into the bias.
    source = match.source.get(None, "<none>")
    if source in order and CONDITIONING_BIAS in plan.state:
        plan.state[CONDITIONING_BIAS] = plan.state[CONDITIONING_BIAS] + saved[order.index(source)]
        plan.notes.append(f"the operator's conditioning on dataset {source!r} folded into its time-step conditioning")
    else:
        plan.notes.append("the operator's per-dataset conditioning left out (no checkpoint dataset has these fields)")


def check_init_checkpoint(path: str | Path, what: str = "init_from") -> dict[str, Any]:
    """The checkpoint at ``path`` (tensors mapped, not read), refused unless it is a UPT checkpoint of this library:
    a stage-2 (OperatorModule) or stage-1 (AutoencoderModule) one. FileNotFoundError / CheckpointError naming the
    fix otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what}={path} does not exist: give a stage-2 checkpoint of a trained model "
                                "(<run>/stage2/checkpoints/*.ckpt, operator_ckpt in its results.json), or drop it")
    checkpoint = read_checkpoint(path, what, mmap=True)
    kind = checkpoint_kind(checkpoint)
    if kind not in KINDS:
        raise CheckpointError(
            f"{what}={path} is {KIND_NAMES.get(kind, 'not a checkpoint this library wrote')}; init_from takes a UPT "
            "checkpoint written by train.py or `upt fit`: a stage-2 one (<run>/stage2/checkpoints/*.ckpt), or a "
            "stage-1 one (the operator then starts fresh)"
        )
    return checkpoint


def module_fields(module: torch.nn.Module) -> dict[str | None, list[str]]:
    """``{dataset: field names}`` of a UPT LightningModule (``{None: names}`` for one dataset)."""
    specs = getattr(module, "dataset_specs", None)
    if specs:
        return {name: list(spec["field_channels"]) for name, spec in specs.items()}
    return {None: list(module.field_spec)}


def module_parts(module: torch.nn.Module) -> tuple[str, ...]:
    """The parts ``init_from`` loads into a UPT LightningModule: a stage-1 module's normaliser, encoder and decoder;
    a stage-2 module's operator, and its autoencoder too when that does not come from a stage-1 checkpoint."""
    if not hasattr(module, "operator"):
        return AUTOENCODER_PARTS
    source = (module.hparams.get("autoencoder") or {}).get("source")
    return ("operator",) if source else PARTS


def init_module_from(module: torch.nn.Module, path: str | Path, parts: Sequence[str],
                     log_summary: bool = True) -> InitPlan:
    """Load ``parts`` of ``module`` (a UPT LightningModule) from the checkpoint at ``path`` by :func:`plan_init` and
    log its summary (INFO; DEBUG with ``log_summary`` False, for callers that logged it already); returns the plan."""
    what = f"init_from={path}"
    checkpoint = check_init_checkpoint(path)
    match = match_datasets(module_fields(module), fields_of(checkpoint["hyper_parameters"]))
    target = module.state_dict()
    plan = plan_init(target, checkpoint["state_dict"], match, parts, what)
    with torch.no_grad():
        for key, value in plan.state.items():
            target[key].copy_(value.to(target[key].dtype))
    kind = KIND_NAMES[checkpoint_kind(checkpoint)]
    log.log(logging.INFO if log_summary else logging.DEBUG, "init_from=%s (%s): %s", path, kind, plan.summary())
    return plan
