"""All loss terms of one operator-stage step, weighted and summed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from upt_lightning.losses.checks import check_non_negative_int, check_weight
from upt_lightning.losses.conservation import conservation_loss
from upt_lightning.losses.curriculum import MAX_WEIGHT, WARMUP_EPOCHS, compute_inverse_loss_curriculum_weight
from upt_lightning.losses.inverse import inverse_decoding_loss, inverse_encoding_loss
from upt_lightning.losses.latent import forward_loss, rollout_loss
from upt_lightning.losses.shared_decode import inverse_losses_from_one_decode, shares_one_decode
from upt_lightning.losses.spectral import spectral_loss

# term -> (its weight key, the arguments it cannot run without)
TERMS = {
    "L_forward": ("lambda_forward", ("pred_next", "target_next")),
    "L_inv_enc": ("lambda_inv_enc", ("input_fields", "encoded_latent", "decoder", "input_positions")),
    "L_inv_dec": ("lambda_inv_dec", ("encoded_latent", "decoder", "encoder", "query_positions", "coords")),
    "L_rollout": ("lambda_rollout", ("pred_rollout", "target_rollout")),
    "L_spectral": ("lambda_spectral", ("spectral_pred", "spectral_target", "grid_shape")),
    "L_conservation": ("lambda_conservation", ("conservation_pred", "conservation_target", "conservation_quantities")),
}
TERM_WEIGHT_KEYS = tuple(key for key, _ in TERMS.values())  # the one list of the terms' weight keys
INVERSE_WEIGHT_KEYS = (TERMS["L_inv_enc"][0], TERMS["L_inv_dec"][0])
# The weights the curriculum ramps in and caps: the inverse terms and the conservation term.
CURRICULUM_WEIGHT_KEYS = (*INVERSE_WEIGHT_KEYS, TERMS["L_conservation"][0])


@dataclass
class LossBundle:
    """``total`` scalar; ``components`` unweighted scalars of the terms that ran; ``weights`` their
    effective (post-curriculum) weights, so ``total == sum(weights[n] * components[n])``."""

    total: torch.Tensor
    components: dict[str, torch.Tensor] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)

    @property
    def weighted(self) -> dict[str, torch.Tensor]:
        return {name: self.weights[name] * value for name, value in self.components.items()}


def base_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """Every term's weight key -> its checked base weight: ``weights`` over the defaults (1 for
    ``lambda_forward``, 0 for every other term: the seed's defaults of a weights mapping given to the bundle;
    ``OperatorLoss`` passes every key, with the project's defaults)."""
    unknown = sorted(set(weights) - set(TERM_WEIGHT_KEYS))
    if unknown:
        raise ValueError(f"unknown loss weight keys {unknown}; known keys are {list(TERM_WEIGHT_KEYS)}")
    defaults = {key: 1.0 if key == "lambda_forward" else 0.0 for key in TERM_WEIGHT_KEYS}
    return {key: check_weight(f"loss.{key}", value) for key, value in {**defaults, **weights}.items()}


def curriculum_weights(base: Mapping[str, float], epoch: int, warmup_epochs: int,
                       max_weight: float) -> dict[str, float]:
    """The curriculum's weights at ``epoch`` of the terms it schedules (:data:`CURRICULUM_WEIGHT_KEYS`), from
    their ``base`` weights. The one application of the curriculum: the bundle and ``OperatorLoss`` share it."""
    return {key: compute_inverse_loss_curriculum_weight(epoch, base[key], warmup_epochs, max_weight)
            for key in CURRICULUM_WEIGHT_KEYS}


def _term_weights(weights: Mapping | None, current_epoch: int | None) -> dict[str, float]:
    """Every term's weight key -> its weight at ``current_epoch`` (None: the base weights) from the seed's one
    ``weights`` mapping: term weights plus ``inverse_loss_warmup_epochs`` and ``inverse_loss_max_weight``."""
    given = dict(weights or {})
    warmup = given.pop("inverse_loss_warmup_epochs", WARMUP_EPOCHS)
    warmup = check_non_negative_int("inverse_loss_warmup_epochs", warmup)
    cap = check_weight("inverse_loss_max_weight", given.pop("inverse_loss_max_weight", MAX_WEIGHT))
    out = base_weights(given)
    if current_epoch is not None:
        out.update(curriculum_weights(out, current_epoch, warmup, cap))
    return out


def _zero_like_inputs(inputs: Mapping) -> torch.Tensor:
    for value in inputs.values():
        candidates = value.values() if isinstance(value, Mapping) else (value,)
        for tensor in candidates:
            if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
                return torch.zeros((), dtype=tensor.dtype, device=tensor.device)
    return torch.zeros(())


def compute_operator_loss_bundle(
    input_fields=None,
    encoded_latent: torch.Tensor | None = None,
    decoder: nn.Module | None = None,
    input_positions: torch.Tensor | None = None,
    encoder: nn.Module | None = None,
    query_positions: torch.Tensor | None = None,
    coords: torch.Tensor | None = None,
    meta: Mapping | None = None,
    pred_next: torch.Tensor | None = None,
    target_next: torch.Tensor | None = None,
    pred_rollout: torch.Tensor | None = None,
    target_rollout: torch.Tensor | None = None,
    spectral_pred=None,
    spectral_target=None,
    weights: Mapping | None = None,
    current_epoch: int | None = None,
    num_queries: int | None = None,
    query_strategy: str = "uniform",
    grid_shape: Sequence[int] | None = None,
    *,
    generator: torch.Generator | None = None,
    per_sample: bool = False,
    mask: torch.Tensor | None = None,
    sampled_gradient: bool = True,
    conservation_pred: torch.Tensor | None = None,
    conservation_target: torch.Tensor | None = None,
    conservation_quantities: Mapping | None = None,
) -> LossBundle:
    """Compute every loss term whose effective weight is non-zero and their weighted sum.

    Terms (inputs) -> weight key: ``L_forward`` (pred_next, target_next) -> ``lambda_forward``
    (default 1.0); ``L_inv_enc`` (input_fields, encoded_latent, decoder, input_positions; ``mask``
    marks padding) -> ``lambda_inv_enc``; ``L_inv_dec`` (encoded_latent, decoder, encoder,
    query_positions, coords, optional meta with its own ``"mask"``) -> ``lambda_inv_dec``;
    ``L_rollout`` (pred_rollout, target_rollout) -> ``lambda_rollout``; ``L_spectral``
    (spectral_pred, spectral_target: physical fields on the grid, and grid_shape) ->
    ``lambda_spectral``; ``L_conservation`` (conservation_pred, conservation_target: physical fields
    (B, N, C), conservation_quantities: resolved declarations; ``mask`` marks padding) ->
    ``lambda_conservation``. Weights default to 0.0 except ``lambda_forward``; unknown keys and
    negative weights raise ValueError. The defaults and the curriculum are those ``OperatorLoss``
    applies in training (:func:`base_weights`, :func:`curriculum_weights`).

    A term with a non-zero weight whose inputs are missing raises ValueError naming them: a
    configured loss runs or fails, it is never skipped silently (the seed's implementation skipped
    a term whose inputs were missing, so a configured loss could do nothing without a word). To
    apply the inverse losses only every n-th batch (the seed's ``inverse_loss_frequency``, which
    counts *batches*, not epochs), pass their weights as 0 on the other batches: ``OperatorLoss``
    (operator_loss.py) does, and is what the training modules call.

    With ``current_epoch`` set, both inverse weights (and the conservation weight) follow
    ``compute_inverse_loss_curriculum_weight`` with ``inverse_loss_warmup_epochs`` and
    ``inverse_loss_max_weight`` (default: the seed's 15 and 0.05, curriculum.py): the weight is 0
    before the warmup *and at epoch == warmup_epochs* (the ramp starts from zero), then ramps
    linearly to the base weight, capped by the max weight. ``num_queries``, ``query_strategy``,
    ``grid_shape``, ``generator`` and ``per_sample`` go to both inverse losses, ``sampled_gradient``
    to ``inverse_decoding_loss``.
    If every weight is 0, ``total`` is a zero tensor on the device of the given tensors.

    When both inverse losses run with sampling and a grid encoder (``accepts_point_subsets``
    False) on the same points and mask, they share one decode (``shared_decode.py``): L_inv_enc
    has the value it would have alone, L_inv_dec the value of the full-grid loss, and the decoder's
    backward runs at the Q points L_inv_enc samples.
    """
    inputs = dict(
        input_fields=input_fields, encoded_latent=encoded_latent, decoder=decoder, input_positions=input_positions,
        encoder=encoder, query_positions=query_positions, coords=coords, pred_next=pred_next,
        target_next=target_next, pred_rollout=pred_rollout, target_rollout=target_rollout,
        spectral_pred=spectral_pred, spectral_target=spectral_target, grid_shape=grid_shape,
        conservation_pred=conservation_pred, conservation_target=conservation_target,
        conservation_quantities=conservation_quantities or None,
    )
    weight_of = _term_weights(weights, current_epoch)
    active = {name: weight_of[key] for name, (key, _) in TERMS.items() if weight_of[key] != 0.0}
    for name in active:
        key, required = TERMS[name]
        missing = [arg for arg in required if inputs[arg] is None]
        if missing:
            raise ValueError(
                f"{name} has weight {key}={weight_of[key]} but {missing} were not given; "
                f"pass them or set {key} to 0"
            )
    sampling = dict(num_queries=num_queries, query_strategy=query_strategy, grid_shape=grid_shape)
    compute = {
        "L_forward": lambda: forward_loss(pred_next, target_next),
        "L_inv_enc": lambda: inverse_encoding_loss(
            input_fields, encoded_latent, decoder, input_positions, **sampling,
            generator=generator, per_sample=per_sample, mask=mask,
        ),
        "L_inv_dec": lambda: inverse_decoding_loss(
            encoded_latent, decoder, encoder, query_positions, coords, meta, **sampling,
            generator=generator, per_sample=per_sample, sampled_gradient=sampled_gradient,
        ),
        "L_rollout": lambda: rollout_loss(pred_rollout, target_rollout),
        "L_spectral": lambda: spectral_loss(spectral_pred, spectral_target, grid_shape),
        "L_conservation": lambda: conservation_loss(conservation_pred, conservation_target, conservation_quantities,
                                                    mask),
    }
    shared = {}
    if {"L_inv_enc", "L_inv_dec"} <= active.keys() and shares_one_decode(
        encoder, input_positions, query_positions, mask, meta, num_queries, sampled_gradient
    ):
        pair = inverse_losses_from_one_decode(
            input_fields, encoded_latent, decoder, encoder, input_positions, coords, meta, **sampling,
            generator=generator, per_sample=per_sample, mask=mask,
        )
        shared = {} if pair is None else dict(zip(("L_inv_enc", "L_inv_dec"), pair))
    components = {name: shared[name] if name in shared else compute[name]() for name in active}
    total = sum((active[name] * value for name, value in components.items()), _zero_like_inputs(inputs))
    return LossBundle(total=total, components=components, weights=active)
