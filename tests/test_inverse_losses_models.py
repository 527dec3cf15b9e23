"""Inverse losses with the real (tiny, frozen) models: gradient flow and which points get re-encoded."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from upt_lightning.losses import compute_operator_loss_bundle, inverse_decoding_loss, inverse_encoding_loss
from upt_lightning.losses import inverse as inverse_module
from upt_lightning.models import AnyPointDecoder, GridEncoder, MeshEncoder

SPEC = {"u": 1, "v": 1}
LATENT_DIM = 8


def _frozen(module: nn.Module) -> nn.Module:
    return module.requires_grad_(False).eval()


def _decoder() -> nn.Module:
    return _frozen(AnyPointDecoder(SPEC, coord_dim=2, latent_dim=LATENT_DIM, dim=16, depth=1, num_heads=2, num_frequencies=3))


def _grid_case():
    encoder = _frozen(GridEncoder(SPEC, (8, 8), patch_size=4, dim=16, depth=1, num_heads=2, latent_tokens=4, latent_dim=LATENT_DIM))
    axis = (torch.arange(8.0) + 0.5) / 8
    coords = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), dim=-1).reshape(1, 64, 2).expand(2, -1, -1)
    fields = {"u": torch.sin(6 * coords[..., :1]), "v": torch.cos(6 * coords[..., 1:])}
    return encoder, coords, fields, {"grid_shape": (8, 8)}


def _mesh_encoder(num_supernodes: int = 8) -> nn.Module:
    return _frozen(MeshEncoder(SPEC, coord_dim=2, num_supernodes=num_supernodes, radius=0.4, max_neighbours=8,
                               dim=16, depth=1, num_heads=2, latent_tokens=4, latent_dim=LATENT_DIM))


def _mesh_case(points: int = 100):
    coords = torch.rand(2, points, 2, generator=torch.Generator().manual_seed(0))
    fields = {"u": torch.sin(6 * coords[..., :1]), "v": torch.cos(6 * coords[..., 1:])}
    return _mesh_encoder(), coords, fields, {}


def _record_encoder_inputs(encoder: nn.Module) -> list:
    seen = []
    encoder.register_forward_pre_hook(lambda module, args: seen.append((args[1].shape, args[2])))
    return seen


def _assert_only_operator_trained(operator: nn.Module, *frozen: nn.Module) -> None:
    assert operator.weight.grad is not None and operator.weight.grad.abs().sum() > 0
    for module in frozen:
        for name, parameter in module.named_parameters():
            assert not parameter.requires_grad and parameter.grad is None, name


@pytest.mark.parametrize("case", [_grid_case, _mesh_case])
def test_gradients_reach_the_operator_through_frozen_models(case):
    encoder, coords, fields, meta = case()
    decoder = _decoder()
    operator = nn.Linear(LATENT_DIM, LATENT_DIM)
    with torch.no_grad():
        z_t = encoder(fields, coords, meta)
    for loss_name in ("encoding", "decoding"):
        operator.zero_grad(set_to_none=True)
        z_pred = operator(z_t)
        if loss_name == "encoding":
            loss = inverse_encoding_loss(fields, z_pred, decoder, coords, num_queries=32, query_strategy="stratified",
                                         grid_shape=meta.get("grid_shape"), generator=torch.Generator().manual_seed(1))
        else:
            loss = inverse_decoding_loss(z_pred, decoder, encoder, coords, coords, meta, num_queries=32)
        loss.backward()
        _assert_only_operator_trained(operator, encoder, decoder)


def test_bundle_trains_the_operator_with_both_inverse_losses_on():
    encoder, coords, fields, meta = _grid_case()
    decoder, operator = _decoder(), nn.Linear(LATENT_DIM, LATENT_DIM)
    with torch.no_grad():
        z_t = encoder(fields, coords, meta)
    bundle = compute_operator_loss_bundle(
        input_fields=fields, encoded_latent=operator(z_t), decoder=decoder, input_positions=coords, encoder=encoder,
        query_positions=coords, coords=coords, meta=meta, weights={"lambda_forward": 0.0, "lambda_inv_enc": 1.0,
                                                                      "lambda_inv_dec": 1.0},
    )
    assert set(bundle.components) == {"L_inv_enc", "L_inv_dec"}
    bundle.total.backward()
    _assert_only_operator_trained(operator, encoder, decoder)


def test_mesh_encoder_re_encodes_only_the_sampled_subset():
    encoder, coords, fields, meta = _mesh_case()
    seen = _record_encoder_inputs(encoder)
    latent = encoder(fields, coords, meta)
    seen.clear()
    inverse_decoding_loss(latent, _decoder(), encoder, coords, coords, meta, num_queries=40, query_strategy="stratified")
    (coords_shape, encoder_meta), = seen
    assert coords_shape == (2, 40, 2) and "mask" not in encoder_meta


def test_mesh_subset_respects_the_padding_mask():
    encoder, coords, fields, _ = _mesh_case()
    mask = torch.ones(2, 100, dtype=torch.bool)
    mask[1, 70:] = False
    latent = torch.randn(2, 4, LATENT_DIM)
    seen = _record_encoder_inputs(encoder)
    inverse_decoding_loss(latent, _decoder(), encoder, coords, coords, {"mask": mask}, num_queries=50, per_sample=True)
    inverse_decoding_loss(latent, _decoder(), encoder, coords, coords, {"mask": mask}, num_queries=80)
    inverse_decoding_loss(latent, _decoder(), encoder, coords, coords, {"mask": mask}, num_queries=100)
    (sub_shape, sub_meta), (fewest_shape, fewest_meta), (full_shape, full_meta) = seen
    assert sub_shape == (2, 50, 2) and "mask" not in sub_meta
    assert fewest_shape == (2, 70, 2) and "mask" not in fewest_meta  # k capped at the 70 real points of sample 1
    assert full_shape == (2, 100, 2) and torch.equal(full_meta["mask"], mask)


def test_mesh_subset_smaller_than_the_supernodes_or_with_forced_supernodes_raises():
    _, coords, _, meta = _mesh_case()
    latent = torch.randn(2, 4, LATENT_DIM)
    with pytest.raises(ValueError, match=r"subsets of 10 points.*num_supernodes=16"):
        inverse_decoding_loss(latent, _decoder(), _mesh_encoder(16), coords, coords, meta, num_queries=10)
    forced = {"supernode_idx": torch.arange(8).expand(2, 8)}
    with pytest.raises(ValueError, match="supernode_idx"):
        inverse_decoding_loss(latent, _decoder(), _mesh_encoder(), coords, coords, forced, num_queries=50)
    # without a subset the forced supernodes stay valid and are used as given
    inverse_decoding_loss(latent, _decoder(), _mesh_encoder(), coords, coords, forced, num_queries=100)


def test_grid_encoder_re_encodes_the_full_grid_and_says_so_once(caplog, monkeypatch):
    monkeypatch.setattr(inverse_module, "_reported_full_grid", set())
    encoder, coords, fields, meta = _grid_case()
    seen = _record_encoder_inputs(encoder)
    latent = torch.randn(2, 4, LATENT_DIM)
    with caplog.at_level(logging.INFO, logger="upt_lightning.losses"):
        for _ in range(2):
            inverse_decoding_loss(latent, _decoder(), encoder, coords, coords, meta, num_queries=16)
    assert [shape for shape, _ in seen] == [(2, 64, 2), (2, 64, 2)]
    messages = [r.getMessage() for r in caplog.records if r.name == "upt_lightning.losses"]
    assert len(messages) == 1 and "num_queries=16" in messages[0] and "GridEncoder" in messages[0]
