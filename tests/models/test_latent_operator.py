"""LatentOperator: identity at initialisation, learns, conditioned on dt per sample, input checks."""

from __future__ import annotations

import pytest
import torch

from upt_lightning.models import LatentOperator


def build():
    return LatentOperator(latent_dim=6, latent_tokens=5, dim=16, depth=2, num_heads=2)


def perturbed(operator):
    """Move every parameter off its initial value, as training would, so gates are non-zero."""
    with torch.no_grad():
        for parameter in operator.parameters():
            parameter.add_(0.2 * torch.randn_like(parameter))
    return operator


def test_fresh_operator_is_identity_for_every_dt_form():
    operator = build()
    z = torch.randn(3, 5, 6)
    for dt in [0.1, torch.tensor(0.1), torch.tensor([0.1, 0.5, 2.0])]:
        assert torch.equal(operator(z, dt), z)
    assert operator.pos_embed.shape == (1, 5, 16)


def test_an_optimizer_step_leaves_the_identity_and_lowers_the_loss():
    operator = build()
    z, target = torch.randn(4, 5, 6), torch.randn(4, 5, 6)
    optimizer = torch.optim.SGD(operator.parameters(), lr=0.1)
    before = torch.nn.functional.mse_loss(operator(z, 0.1), target)
    before.backward()
    optimizer.step()
    after = operator(z, 0.1)
    assert (after - z).abs().max() > 1e-3
    assert torch.nn.functional.mse_loss(after, target) < before


def test_output_depends_on_dt_once_trained():
    operator = perturbed(build())
    z = torch.randn(2, 5, 6)
    assert (operator(z, 0.1) - operator(z, 0.2)).abs().max() > 1e-3
    torch.testing.assert_close(operator(z, torch.tensor([0.1, 0.1])), operator(z, 0.1), rtol=0, atol=1e-6)


def test_per_sample_dt_conditions_each_sample_separately():
    operator = perturbed(build())
    z = torch.randn(3, 5, 6)
    dts = [0.05, 0.3, 1.0]
    batched = operator(z, torch.tensor(dts))
    for i, dt in enumerate(dts):
        torch.testing.assert_close(batched[i : i + 1], operator(z[i : i + 1], dt), rtol=0, atol=1e-5)


def test_token_positions_matter():
    operator = perturbed(build())
    z = torch.randn(1, 5, 6)
    swapped = z[:, [1, 0, 2, 3, 4]]
    assert (operator(swapped, 0.1)[:, [1, 0, 2, 3, 4]] - operator(z, 0.1)).abs().max() > 1e-4


def test_bad_inputs_are_clear_errors():
    operator = build()
    z = torch.randn(2, 5, 6)
    with pytest.raises(ValueError, match=r"dt must be a float, a scalar tensor or a \(2,\) tensor"):
        operator(z, torch.tensor([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match=r"dt contains 2 NaN or infinite values"):  # a float, expanded to (B,)
        operator(z, float("nan"))
    with pytest.raises(ValueError, match=r"z must have shape \(B, 5, 6\)"):
        operator(torch.randn(2, 4, 6), 0.1)
