"""Conservation diagnostics against hand-computed integrals of fields with known means, energy and enstrophy."""

from __future__ import annotations

import math

import pytest
import torch

from upt_lightning.metrics.conservation import ConservationDrift, domain_integrals, resolve_quantities

N = 16
SPEC = {"mean_u": {"kind": "mean", "fields": ["u"]}, "energy": {"kind": "energy", "fields": ["u", "v"]},
        "enstrophy": {"kind": "enstrophy", "fields": ["w"]}}


def known_fields() -> torch.Tensor:
    """(N*N, 3): u = 1 + sin(2 pi x), v = cos(2 pi y), w = 2 sin(2 pi x) sin(2 pi y) on cell centres."""
    x = (torch.arange(N, dtype=torch.float64) + 0.5) / N
    gx, gy = (g.reshape(-1) for g in torch.meshgrid(x, x, indexing="ij"))
    u = 1 + torch.sin(2 * math.pi * gx)
    v = torch.cos(2 * math.pi * gy)
    w = 2 * torch.sin(2 * math.pi * gx) * torch.sin(2 * math.pi * gy)
    return torch.stack([u, v, w], -1)


def test_integrals_of_known_fields():
    quantities = resolve_quantities(SPEC, ["u", "v", "w"])
    values = domain_integrals(known_fields(), quantities)
    # mean(u) = 1; energy = 0.5 mean(u^2 + v^2) = 0.5 (1 + 1/2 + 1/2) = 1; enstrophy = 0.5 mean(w^2) = 0.5.
    assert float(values["mean_u"]) == pytest.approx(1.0, abs=1e-12)
    assert float(values["energy"]) == pytest.approx(1.0, abs=1e-12)
    assert float(values["enstrophy"]) == pytest.approx(0.5, abs=1e-12)


def test_masked_points_do_not_count():
    fields = torch.tensor([[[2.0], [4.0], [100.0]]])  # (B=1, N=3, C=1); the third point is padding
    mask = torch.tensor([[True, True, False]])
    values = domain_integrals(fields, resolve_quantities({"m": {"kind": "mean", "fields": ["u"]}}, ["u"]), mask)
    assert float(values["m"]) == pytest.approx(3.0)


def test_drift_per_step_against_hand_values():
    truth = known_fields().expand(2, 2, -1, -1).clone()  # (B=2, K=2, N, C)
    pred = truth.clone()
    pred[:, 0, :, 0] += 0.5  # step 1: the mean of u is off by 0.5
    pred[:, 1] *= 1.1        # step 2: every field 10% too large
    metric = ConservationDrift(resolve_quantities(SPEC, ["u", "v", "w"]), horizon=2)
    metric.update(pred, truth)
    drift = metric.compute()
    rms_u = math.sqrt(1 + 0.5)  # sqrt(mean(u^2)) of the true u
    assert drift["mean_u"].tolist() == pytest.approx([0.5 / rms_u, 0.1 / rms_u])
    # Step 1: energy 0.5 mean((u + 0.5)^2 + v^2) = 1 + 0.5 (mean(u) + 0.25) = 1.625 against 1.
    assert drift["energy"].tolist() == pytest.approx([0.625, 0.21])
    assert drift["enstrophy"].tolist() == pytest.approx([0.0, 0.21], abs=1e-12)


def test_declarations_the_channels_cannot_serve_are_refused_by_name():
    with pytest.raises(ValueError, match="'e'.*kind 'momentum'"):
        resolve_quantities({"e": {"kind": "momentum", "fields": ["u"]}}, ["u"])
    with pytest.raises(ValueError, match="'m'.*fields \\['p'\\].*channels are \\['u'\\]"):
        resolve_quantities({"m": {"kind": "mean", "fields": ["p"]}}, ["u"])
    with pytest.raises(ValueError, match="'m' \\(mean\\) takes one field"):
        resolve_quantities({"m": {"kind": "mean", "fields": ["u", "v"]}}, ["u", "v"])
    assert resolve_quantities(None, ["u"]) == {}
