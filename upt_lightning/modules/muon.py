"""Muon for the weight matrices, AdamW for everything else, as one optimiser.

Muon (momentum, then the update matrix orthogonalised by a Newton-Schulz iteration) takes steps of the
same size in every direction of a weight matrix, where Adam's per-entry scaling lets a few directions
dominate. On the default experiment's autoencoder it reached the same reconstruction error in about half
the optimiser steps of AdamW (docs/accuracy.md). Vectors (biases, norms), learned query tokens and thin
matrices (the heads onto one or two field channels) are no matrices in that sense and keep AdamW.

One ``torch.optim.Optimizer`` with two kinds of parameter group, so Lightning, the learning-rate
schedule (which scales every group's ``lr`` by the same factor), checkpoints and resume treat it like
AdamW. Written here rather than taken from ``torch.optim.Muon`` (PyTorch 2.9 and later) because the
library supports older PyTorch, and to run the iteration in float32 on the CPU, where bfloat16 matrix
products are slow.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch.optim.adamw import adamw

# Quintic Newton-Schulz coefficients that maximise the slope at zero (Keller Jordan's Muon).
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
# A matrix goes to Muon when both of its sides have at least this many entries.
MIN_MATRIX_SIDE = 16


def is_muon_matrix(param: torch.Tensor) -> bool:
    """True for a 2-D weight whose both sides are at least ``MIN_MATRIX_SIDE`` (hidden-layer matrices)."""
    return param.ndim == 2 and min(param.shape) >= MIN_MATRIX_SIDE


def orthogonalise(update: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """Approximately ``U V^T`` of each ``update = U S V^T``, ``(A, B)`` or a stack ``(K, A, B)``.

    Five quintic Newton-Schulz steps leave the singular values above about 1/200 of the Frobenius norm
    between about 0.5 and 1.2 (the smaller ones grow but stay below), which is all Muon needs. Runs in
    bfloat16 on accelerators and in float32 on the CPU. Returns a tensor of ``update``'s shape and dtype.
    """
    a, b, c = NS_COEFFICIENTS
    x = update.to(torch.bfloat16 if update.is_cuda else torch.float32)
    transposed = x.shape[-2] > x.shape[-1]
    if transposed:
        x = x.mT
    # Spectral norm <= Frobenius norm: every singular value starts in [0, 1].
    x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    if transposed:
        x = x.mT
    return x.to(update.dtype)


class MuonAdamW(torch.optim.Optimizer):
    """Muon on the groups with ``muon=True``, AdamW on the others.

    Muon groups: ``lr``, ``momentum`` (Nesterov), ``weight_decay`` (decoupled), ``ns_steps``. The step of an
    ``(A, B)`` matrix is scaled by ``0.2 sqrt(max(A, B))``, which gives it the root-mean-square size of an
    AdamW step, so a Muon ``lr`` reads like an AdamW one. AdamW groups: ``lr``, ``betas``, ``eps``,
    ``weight_decay``.
    """

    def __init__(self, groups: Sequence[dict]):
        defaults = dict(lr=1e-3, weight_decay=0.0, momentum=0.95, ns_steps=5, betas=(0.9, 0.999), eps=1e-8,
                        muon=False)
        super().__init__(list(groups), defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if group["muon"]:
                self._muon_step(group)
            else:
                self._adamw_step(group)
        return loss

    def _muon_step(self, group: dict) -> None:
        lr, momentum = group["lr"], group["momentum"]
        params, grads, buffers = [], [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p)
            params.append(p)
            grads.append(p.grad)
            buffers.append(state["momentum_buffer"])
        if not params:
            return
        # One call per list instead of one per tensor (the same arithmetic): on a CPU a small model's optimiser
        # step is mostly per-call overhead.
        torch._foreach_lerp_(buffers, grads, 1 - momentum)
        updates = torch._foreach_lerp(grads, buffers, momentum)  # Nesterov
        if group["weight_decay"]:
            torch._foreach_mul_(params, 1 - lr * group["weight_decay"])
        # Matrices of one shape are orthogonalised as one stack: a fifth of a small model's step went to the
        # per-matrix calls (docs/accuracy.md).
        # A tall matrix joins the wide ones of its transposed shape (the iteration is transpose-equivariant).
        tall = [u.shape[0] > u.shape[1] for u in updates]
        updates = [u.T if t else u for u, t in zip(updates, tall)]
        by_shape: dict[tuple, list[int]] = {}
        for index, update in enumerate(updates):
            by_shape.setdefault((tuple(update.shape), update.dtype, update.device), []).append(index)
        for indices in by_shape.values():
            stacked = orthogonalise(torch.stack([updates[i] for i in indices]), group["ns_steps"])
            steps = [update.T if tall[i] else update for i, update in zip(indices, stacked.unbind(0))]
            # One shape, one scale: 0.2 sqrt(max side) gives the step an AdamW step's RMS size.
            scale = -lr * 0.2 * math.sqrt(max(params[indices[0]].shape))
            torch._foreach_add_([params[i] for i in indices], steps, alpha=scale)

    def _adamw_step(self, group: dict) -> None:
        """PyTorch's own AdamW update (``torch.optim.adamw.adamw``, the function behind ``torch.optim.AdamW``)
        on this group's parameters, with the state laid out as ``torch.optim.AdamW`` keeps it."""
        params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if not state:
                state["step"] = torch.tensor(0.0)
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
            params.append(p)
            grads.append(p.grad)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            steps.append(state["step"])
        if params:
            beta1, beta2 = group["betas"]
            adamw(
                params, grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False, beta1=beta1, beta2=beta2,
                lr=group["lr"], weight_decay=group["weight_decay"], eps=group["eps"], maximize=False,
                foreach=True,  # torch picks the per-tensor loop on a CPU; the list calls cost less there
            )


def muon_groups(
    params: Iterable[torch.nn.Parameter], lr: float, muon_lr: float, weight_decay: float, betas: Sequence[float],
    exempt: Iterable[torch.nn.Parameter] = (),
) -> list[dict]:
    """Split ``params`` into a Muon group (the matrices, :func:`is_muon_matrix`, not in ``exempt``) and an AdamW
    group (the rest)."""
    params = list(params)
    skip = {id(p) for p in exempt}
    matrices = [p for p in params if is_muon_matrix(p) and id(p) not in skip]
    others = [p for p in params if not (is_muon_matrix(p) and id(p) not in skip)]
    groups = []
    if matrices:
        groups.append(dict(params=matrices, lr=muon_lr, weight_decay=weight_decay, muon=True))
    if others:
        groups.append(dict(params=others, lr=lr, weight_decay=weight_decay, betas=tuple(float(b) for b in betas),
                           muon=False))
    return groups
