"""The Muon + AdamW optimiser: orthogonalised matrix steps, AdamW elsewhere, schedule, checkpoints."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from upt_lightning.modules.muon import MuonAdamW, is_muon_matrix, muon_groups, orthogonalise
from upt_lightning.modules.optim import build_optimizer


@pytest.mark.parametrize("shape", [(32, 32), (48, 96), (96, 24)])
def test_orthogonalise_pushes_every_singular_value_towards_one(shape):
    torch.manual_seed(0)
    # A badly conditioned matrix: singular values spread over two orders of magnitude.
    u, _ = torch.linalg.qr(torch.randn(shape[0], shape[0]))
    v, _ = torch.linalg.qr(torch.randn(shape[1], shape[1]))
    k = min(shape)
    s = torch.logspace(0, -2, k)
    g = u[:, :k] @ torch.diag(s) @ v[:, :k].T
    out = orthogonalise(g)
    assert out.shape == g.shape and out.dtype == g.dtype
    sv = torch.linalg.svdvals(out)
    assert sv.max() < 1.3 and sv.min() > 0.5  # from 0.01..1 to within a factor ~2 of each other
    # Same singular vectors: the output is U f(S) V^T, so U^T out V is diagonal.
    core = u[:, :k].T @ out @ v[:, :k]
    off = core - torch.diag(torch.diagonal(core))
    assert off.abs().max() < 1e-3


def test_matrices_go_to_muon_vectors_and_thin_heads_to_adamw():
    model = nn.Sequential(nn.Linear(3, 64), nn.LayerNorm(64), nn.Linear(64, 64), nn.Linear(64, 2))
    groups = muon_groups(model.parameters(), 1e-3, 5e-3, 0.0, (0.9, 0.999))
    muon = {id(p) for g in groups if g["muon"] for p in g["params"]}
    assert muon == {id(model[2].weight)}  # (64, 3) and (2, 64) are too thin, biases and norms are vectors
    assert not is_muon_matrix(model[0].weight) and is_muon_matrix(model[2].weight)
    lrs = {g["muon"]: g["lr"] for g in groups}
    assert lrs == {True: 5e-3, False: 1e-3}


def test_adamw_part_equals_torch_adamw():
    torch.manual_seed(1)
    ours = [nn.Parameter(torch.randn(5)), nn.Parameter(torch.randn(3, 4))]
    ref = [nn.Parameter(p.detach().clone()) for p in ours]
    opt = MuonAdamW([dict(params=ours, lr=0.01, weight_decay=0.1, betas=(0.9, 0.99), muon=False)])
    ref_opt = torch.optim.AdamW(ref, lr=0.01, weight_decay=0.1, betas=(0.9, 0.99))
    for step in range(5):
        grads = [torch.randn_like(p) for p in ours]
        for p, q, g in zip(ours, ref, grads):
            p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        ref_opt.step()
    for p, q in zip(ours, ref):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_a_muon_step_is_orthogonal_and_sized_like_adamw():
    torch.manual_seed(2)
    weight = nn.Parameter(torch.zeros(32, 64))
    opt = MuonAdamW([dict(params=[weight], lr=0.01, weight_decay=0.0, momentum=0.95, muon=True)])
    weight.grad = torch.randn(32, 64) * torch.logspace(0, -2, 64)  # columns of very different scale
    opt.step()
    step = weight.detach()
    # Nesterov step of a fresh buffer is a multiple of the gradient; orthogonalised, then scaled by
    # 0.2 * sqrt(max side): every singular value near 0.2 * sqrt(64) * lr, whatever the gradient's scale.
    sv = torch.linalg.svdvals(step) / (0.01 * 0.2 * math.sqrt(64))
    assert sv.min() > 0.5 and sv.max() < 1.3
    assert step.pow(2).mean().sqrt() == pytest.approx(0.01 * 0.2, rel=0.35)  # an AdamW-sized RMS step


def test_muon_weight_decay_is_decoupled():
    weight = nn.Parameter(torch.ones(16, 16))
    opt = MuonAdamW([dict(params=[weight], lr=0.1, weight_decay=0.5, muon=True)])
    weight.grad = torch.zeros(16, 16)
    opt.step()  # zero gradient: the orthogonalised step is zero, only the decay acts
    torch.testing.assert_close(weight.detach(), torch.full((16, 16), 1 - 0.1 * 0.5))


def _regression(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 32), nn.GELU(), nn.Linear(32, 32), nn.GELU(), nn.Linear(32, 1))
    x = torch.randn(256, 4)
    y = (x[:, :1] * x[:, 1:2]).sin() + x[:, 2:3]
    return model, x, y


def _train(model, x, y, optimizer, steps, lr=3e-2, state=None, start=0):
    built = build_optimizer(model.parameters(), lr, 60, optimizer=optimizer, muon_lr_ratio=2.5, warmup_fraction=0.0)
    opt, schedule = built["optimizer"], built["lr_scheduler"]["scheduler"]
    if state is not None:
        opt.load_state_dict(state[0])
        schedule.load_state_dict(state[1])
    for _ in range(start, steps):
        loss = (model(x) - y).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
    return (model(x) - y).pow(2).mean().item(), opt, schedule


def test_muon_trains_a_small_network_and_the_schedule_scales_both_groups():
    # 60 steps of the cosine (30, then 30 more from the saved state) take the loss below 5% of its start.
    model, x, y = _regression()
    start = (model(x) - y).pow(2).mean().item()
    loss, opt, schedule = _train(model, x, y, "muon", 30)
    factor = schedule.lr_lambdas[0](30)
    lrs = {g["muon"]: g["lr"] for g in opt.param_groups}
    assert 0 < factor < 1  # half way down the cosine of 60 steps
    assert lrs[True] == pytest.approx(2.5 * 3e-2 * factor) and lrs[False] == pytest.approx(3e-2 * factor)
    loss, _, _ = _train(model, x, y, "muon", 30, state=(opt.state_dict(), schedule.state_dict()))
    assert loss < 0.05 * start


def test_resuming_from_the_optimiser_state_continues_exactly():
    model, x, y = _regression()
    straight, _, _ = _train(model, x, y, "muon", 40)
    model, x, y = _regression()
    _, opt, schedule = _train(model, x, y, "muon", 20)
    saved = (opt.state_dict(), schedule.state_dict())
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    model, x, y = _regression()
    model.load_state_dict(weights)
    resumed, _, _ = _train(model, x, y, "muon", 40, state=saved, start=20)
    assert resumed == pytest.approx(straight, rel=1e-6)


def test_muon_lr_ratio_must_be_positive():
    with pytest.raises(ValueError, match="muon_lr_ratio"):
        build_optimizer([nn.Parameter(torch.zeros(16, 16))], 1e-3, 10, optimizer="muon", muon_lr_ratio=0.0)


def test_a_stack_is_orthogonalised_matrix_by_matrix():
    torch.manual_seed(3)
    stack = torch.randn(3, 24, 40) * torch.tensor([1.0, 10.0, 0.1]).view(3, 1, 1)
    one_by_one = torch.stack([orthogonalise(m) for m in stack])
    torch.testing.assert_close(orthogonalise(stack), one_by_one, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(orthogonalise(stack[0].T), one_by_one[0].T, rtol=1e-4, atol=1e-5)


def test_grouped_step_equals_a_step_per_matrix():
    # Matrices of one shape (and a tall one of the transposed shape) are orthogonalised as one stack.
    torch.manual_seed(4)
    shapes = [(32, 48), (32, 48), (48, 32), (16, 16)]
    grads = [torch.randn(s) for s in shapes]
    together = [nn.Parameter(torch.randn(s)) for s in shapes]
    apart = [nn.Parameter(p.detach().clone()) for p in together]
    opts = [MuonAdamW([dict(params=[p], lr=0.01, weight_decay=0.1, muon=True)]) for p in apart]
    optimiser = MuonAdamW([dict(params=together, lr=0.01, weight_decay=0.1, muon=True)])
    for _ in range(3):
        for p, q, g in zip(together, apart, grads):
            p.grad, q.grad = g.clone(), g.clone()
        optimiser.step()
        for opt in opts:
            opt.step()
    for p, q in zip(together, apart):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)


def test_the_operators_conditioning_weights_train_with_adamw_and_still_learn():
    """The time-step MLP and adaLN modulations act on one conditioning vector per sample: their gradients have
    rank 1 for a fixed time step, which an orthogonalised step of Muon's size would hardly move."""
    from upt_lightning.models.latent_operator import LatentOperator

    torch.manual_seed(0)
    op = LatentOperator(latent_dim=16, latent_tokens=8, dim=32, depth=2, num_heads=4)
    conditioning = {id(p) for p in op.conditioning_parameters()}
    names = {n for n, p in op.named_parameters() if id(p) in conditioning}
    assert names == {n for n, _ in op.named_parameters() if n.startswith("dt_embed.") or ".modulation." in n}
    opt = build_optimizer(op.parameters(), 1e-3, 10, optimizer="muon", muon_lr_ratio=2.5,
                          muon_exempt=op.conditioning_parameters())["optimizer"]
    muon = {id(p) for g in opt.param_groups if g["muon"] for p in g["params"]}
    assert muon and not muon & conditioning
    assert id(op.blocks[0].attn.q.weight) in muon and id(op.blocks[0].modulation[1].weight) not in muon
    # With one time step the modulation's gradient has rank 1; AdamW moves its entries by about lr each. The
    # zero-initialised output layer passes no gradient back in the first step, so take two.
    z = torch.randn(4, 8, 16)
    before = op.blocks[0].modulation[1].weight.detach().clone()
    for _ in range(2):
        opt.zero_grad()
        ((op(z, 1.0) - z.flip(0)) ** 2).mean().backward()
        opt.step()
    moved = (op.blocks[0].modulation[1].weight.detach() - before).abs()
    assert 0.5e-3 < moved.max().item() < 1.1e-3
