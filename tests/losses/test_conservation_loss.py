"""The conservation loss: zero for the truth, the squared drift of the diagnostics otherwise, gradient into pred."""

from __future__ import annotations

import pytest
import torch

from upt_lightning.losses.conservation import conservation_loss
from upt_lightning.metrics.conservation import ConservationDrift, resolve_quantities

QUANTITIES = resolve_quantities({"mean_u": {"kind": "mean", "fields": ["u"]},
                                 "energy": {"kind": "energy", "fields": ["u", "v"]}}, ["u", "v"])


def test_value_is_the_mean_squared_drift_and_zero_for_the_truth():
    gen = torch.Generator().manual_seed(0)
    target = torch.randn(3, 50, 2, generator=gen) + torch.tensor([0.5, -0.2])
    assert float(conservation_loss(target.clone(), target, QUANTITIES)) == pytest.approx(0.0, abs=1e-12)
    pred = 1.2 * target + 0.1
    drift = ConservationDrift(QUANTITIES, horizon=1)
    per_sample = []
    for i in range(3):  # the metric averages |drift|; the loss averages drift^2 over samples
        drift.reset()
        drift.update(pred[i : i + 1, None], target[i : i + 1, None])
        per_sample.append(torch.stack([v[0] for v in drift.compute().values()]))
    expected = torch.stack(per_sample).square().mean()
    assert float(conservation_loss(pred, target, QUANTITIES)) == pytest.approx(float(expected), rel=1e-6)


def test_gradient_reaches_the_prediction_only():
    target = torch.randn(2, 40, 2)
    pred = (target + 0.3).requires_grad_(True)
    target.requires_grad_(True)
    conservation_loss(pred, target, QUANTITIES).backward()
    assert float(pred.grad.abs().sum()) > 0 and target.grad is None


def test_bad_shapes_and_missing_quantities_are_refused():
    with pytest.raises(ValueError, match=r"\(B, N, C\) fields of one shape"):
        conservation_loss(torch.zeros(2, 4, 2), torch.zeros(2, 5, 2), QUANTITIES)
    with pytest.raises(ValueError, match="data.conservation"):
        conservation_loss(torch.zeros(2, 4, 2), torch.zeros(2, 4, 2), {})
