"""Inverse losses with the real (tiny, frozen) models: gradient flow and which points get re-encoded."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from helpers.inverse import LATENT_DIM, grid_case, mesh_case, mesh_encoder, tiny_decoder
from upt_lightning.losses import compute_operator_loss_bundle, inverse_decoding_loss, inverse_encoding_loss
from upt_lightning.losses import inverse as inverse_module


def _record_encoder_inputs(encoder: nn.Module) -> list:
    seen = []
    encoder.register_forward_pre_hook(lambda module, args: seen.append((args[1].shape, args[2])))
    return seen


def _assert_only_operator_trained(operator: nn.Module, *frozen: nn.Module) -> None:
    assert operator.weight.grad is not None and operator.weight.grad.abs().sum() > 0
    for module in frozen:
        for name, parameter in module.named_parameters():
            assert not parameter.requires_grad and parameter.grad is None, name


@pytest.mark.parametrize("case", [grid_case, mesh_case])
def test_gradients_reach_the_operator_through_frozen_models(case):
    encoder, coords, fields, meta = case()
    decoder = tiny_decoder()
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
    encoder, coords, fields, meta = grid_case()
    decoder, operator = tiny_decoder(), nn.Linear(LATENT_DIM, LATENT_DIM)
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
    encoder, coords, fields, meta = mesh_case()
    seen = _record_encoder_inputs(encoder)
    latent = encoder(fields, coords, meta)
    seen.clear()
    inverse_decoding_loss(latent, tiny_decoder(), encoder, coords, coords, meta, num_queries=40,
                          query_strategy="stratified")
    (coords_shape, encoder_meta), = seen
    assert coords_shape == (2, 40, 2) and "mask" not in encoder_meta


def test_mesh_subset_respects_the_padding_mask():
    encoder, coords, fields, _ = mesh_case()
    mask = torch.ones(2, 100, dtype=torch.bool)
    mask[1, 70:] = False
    latent = torch.randn(2, 4, LATENT_DIM)
    seen = _record_encoder_inputs(encoder)
    inverse_decoding_loss(latent, tiny_decoder(), encoder, coords, coords, {"mask": mask}, num_queries=50,
                          per_sample=True)
    inverse_decoding_loss(latent, tiny_decoder(), encoder, coords, coords, {"mask": mask}, num_queries=80)
    inverse_decoding_loss(latent, tiny_decoder(), encoder, coords, coords, {"mask": mask}, num_queries=100)
    (sub_shape, sub_meta), (fewest_shape, fewest_meta), (full_shape, full_meta) = seen
    assert sub_shape == (2, 50, 2) and "mask" not in sub_meta
    assert fewest_shape == (2, 70, 2) and "mask" not in fewest_meta  # k capped at the 70 real points of sample 1
    assert full_shape == (2, 100, 2) and torch.equal(full_meta["mask"], mask)


def test_mesh_subset_smaller_than_the_supernodes_or_with_forced_supernodes_raises():
    _, coords, _, meta = mesh_case()
    latent = torch.randn(2, 4, LATENT_DIM)
    with pytest.raises(ValueError, match=r"subsets of 10 points.*num_supernodes=16"):
        inverse_decoding_loss(latent, tiny_decoder(), mesh_encoder(16), coords, coords, meta, num_queries=10)
    forced = {"supernode_idx": torch.arange(8).expand(2, 8)}
    with pytest.raises(ValueError, match="supernode_idx"):
        inverse_decoding_loss(latent, tiny_decoder(), mesh_encoder(), coords, coords, forced, num_queries=50)
    # without a subset the forced supernodes stay valid and are used as given
    inverse_decoding_loss(latent, tiny_decoder(), mesh_encoder(), coords, coords, forced, num_queries=100)


def test_grid_encoder_re_encodes_the_full_grid_and_says_how_once_per_mode(caplog, monkeypatch):
    monkeypatch.setattr(inverse_module, "_reported_full_grid", set())
    encoder, coords, fields, meta = grid_case()
    seen = _record_encoder_inputs(encoder)
    latent = torch.randn(2, 4, LATENT_DIM)
    with caplog.at_level(logging.INFO, logger="upt_lightning.losses"):
        for sampled_gradient in (True, True, False, False):
            inverse_decoding_loss(latent, tiny_decoder(), encoder, coords, coords, meta, num_queries=16,
                                  sampled_gradient=sampled_gradient)
    assert [shape for shape, _ in seen] == [(2, 64, 2)] * 4
    sampled, exact = [r.getMessage() for r in caplog.records if r.name == "upt_lightning.losses"]
    assert "GridEncoder" in sampled and "num_queries=16 sampled points" in sampled and "ignores" not in sampled
    assert "GridEncoder" in exact and "sampled_gradient=False" in exact
