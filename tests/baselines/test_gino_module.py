"""The GINO baseline on scattered points: its vectorised neighbour reduction, padding, rollouts, checkpoints."""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("neuralop")

from helpers.modules import make_trainer  # noqa: E402
from upt_lightning.baselines.gino import GINOModule  # noqa: E402
from upt_lightning.baselines.neuralop_import import segment_csr  # noqa: E402

FIELDS = {"u": 1, "v": 1}
TINY = dict(latent_grid=8, radius=0.25, n_modes=4, hidden_channels=8, n_layers=1,
            gino_kwargs={"in_gno_channel_mlp_hidden_layers": [16], "out_gno_channel_mlp_hidden_layers": [16],
                         "gno_embed_channels": 4})


def waves(points: torch.Tensor, t: float) -> torch.Tensor:
    """Smooth periodic fields (..., P, 2) at points (..., P, 2) and time t (one cell of 1/8 per frame)."""
    u = torch.sin(2 * math.pi * (points[..., 0] - t / 8))
    v = torch.cos(2 * math.pi * (points[..., 1] + t / 8))
    return torch.stack([u, v], dim=-1)


def mesh_batch(sizes=(40, 30), horizon=2, seed=0) -> dict:
    """A padded mesh batch: fields (B, N, 2), targets (B, K, N, 2), coords (B, N, 2), mask (B, N), dt (B,)."""
    gen = torch.Generator().manual_seed(seed)
    n = max(sizes)
    coords = torch.rand(len(sizes), n, 2, generator=gen)
    mask = torch.arange(n)[None] < torch.tensor(sizes)[:, None]
    fields = torch.where(mask[..., None], waves(coords, 0), torch.zeros(()))
    targets = torch.stack([torch.where(mask[..., None], waves(coords, k), torch.zeros(()))
                           for k in range(1, horizon + 1)], dim=1)
    return {"fields": fields, "targets": targets, "coords": coords, "mask": mask, "dt": torch.full((len(sizes),), 0.1)}


def module(**kwargs) -> GINOModule:
    torch.manual_seed(0)
    model = GINOModule(FIELDS, **{**TINY, **kwargs})
    model.normalizer.set_stats({"field_mean": torch.zeros(2), "field_std": torch.ones(2),
                                "coord_min": torch.zeros(2), "coord_max": torch.ones(2)}, dt=0.1)
    return model


@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_vectorised_neighbour_reduction_equals_neuraloperators_loop(batched, reduction):
    from neuralop.layers.segment_csr import segment_csr as reference

    gen = torch.Generator().manual_seed(0)
    indptr = torch.tensor([0, 3, 3, 7, 12])  # an empty neighbourhood included
    src = torch.randn(*((2,) if batched else ()), 12, 3, generator=gen, requires_grad=True)
    ptr = indptr[None] if batched else indptr
    ours, theirs = segment_csr(src, ptr, reduction), reference(src, ptr, reduction, use_scatter=False)
    torch.testing.assert_close(ours, theirs)
    weights = torch.randn_like(ours)
    grad_ours, = torch.autograd.grad((ours * weights).sum(), src)
    grad_theirs, = torch.autograd.grad((theirs * weights).sum(), src)
    torch.testing.assert_close(grad_ours, grad_theirs)


def test_padding_changes_no_prediction_and_stays_untouched():
    model = module().eval()
    batch = mesh_batch(sizes=(40, 30))
    b = model.prepare_batch(batch)
    with torch.no_grad():
        padded = model.predict_next_normalised(b)
        alone = model.step_points(b.fields[1:, :30], b.coords[1:, :30], None)
    torch.testing.assert_close(padded[1, :30], alone[0])
    assert torch.equal(padded[1, 30:], b.fields[1, 30:])  # padding is carried along, never predicted
    assert not torch.equal(padded[0], b.fields[0])


def test_a_few_steps_of_training_lower_the_loss_on_learnable_dynamics():
    model = module(optim={"lr": 3e-3, "warmup_fraction": 0.0})
    batch = mesh_batch(sizes=(60, 50, 40), horizon=1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = model.training_step(batch, 0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_rollout_keeps_the_requested_steps_in_order_and_refuses_other_points():
    model = module().eval()
    batch = mesh_batch(sizes=(40, 40))
    fields, coords = batch["fields"], batch["coords"]
    default = model.rollout(fields, coords, 3)
    assert default.shape == (2, 3, 40, 2)
    torch.testing.assert_close(model.rollout(fields, coords, 3, decode_steps=[3, 1]), default[:, [2, 0]])
    torch.testing.assert_close(model(fields, coords), default[:, 0])
    with pytest.raises(ValueError, match="at its input points"):
        model.rollout(fields, coords, 1, query_points=torch.rand(2, 17, 2))
    with pytest.raises(ValueError, match="dt="):
        model.rollout(fields, coords, 1, dt=0.5)


def test_checkpoint_round_trip_with_weights_only(tmp_path):
    model = module()
    trainer = make_trainer()
    trainer.strategy.connect(model)
    path = tmp_path / "gino.ckpt"
    trainer.save_checkpoint(path)
    loaded = GINOModule.load_from_checkpoint(path, weights_only=True).eval()
    batch = mesh_batch()
    torch.testing.assert_close(loaded.rollout(batch["fields"], batch["coords"], 2, mask=batch["mask"]),
                               model.eval().rollout(batch["fields"], batch["coords"], 2, mask=batch["mask"]))


@pytest.mark.parametrize("kwargs, message", [
    (dict(latent_grid=1), "latent_grid=1 must be an int >= 2"),
    (dict(latent_grid=8, n_modes=6), "n_modes=6 exceeds what a latent grid of 8 points resolves"),
    (dict(radius=2.0), "radius=2.0 must lie in"),
    (dict(n_layers=0), "n_layers=0 must be a positive integer"),
])
def test_impossible_sizes_are_refused_with_the_reason(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GINOModule(FIELDS, **{**TINY, **kwargs})
