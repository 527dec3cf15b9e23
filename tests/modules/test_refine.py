"""Latent refinement: better reconstructions, determinism, masks, inference mode, and the operator's encode."""

import pytest
import torch

from helpers.entry import compose_train
from helpers.modules import loader
from upt_lightning.data.latent_cache import encoder_fingerprint
from upt_lightning.errors import ConfigError
from upt_lightning.modules import AutoencoderModule, OperatorModule
from upt_lightning.modules.refine import check_refinement, refine_latents
from upt_lightning.pipeline.config_checks import check_config

SETTINGS = {"steps": 50, "lr": 5e-2, "points": 64}


@pytest.fixture()
def stage1(autoencoder_ckpt):
    model = AutoencoderModule.load_from_checkpoint(autoencoder_ckpt, weights_only=True).eval()
    batch = model.prepare_batch(next(iter(loader())))
    return model, batch


def reconstruction_error(model, latent, batch) -> float:
    return float((model.decode(latent, batch.coords) - batch.fields).pow(2).mean())


def test_refinement_lowers_the_reconstruction_error_and_is_deterministic(stage1):
    model, b = stage1
    with torch.no_grad():
        plain = model.encode(b.fields, b.coords, b.meta)
        refined = refine_latents(model.decode, plain, b.fields, b.coords, **SETTINGS)
        assert reconstruction_error(model, refined, b) < 0.85 * reconstruction_error(model, plain, b)
    torch.testing.assert_close(refine_latents(model.decode, plain, b.fields, b.coords, **SETTINGS), refined,
                               rtol=0, atol=0)
    assert all(p.grad is None for p in model.decoder.parameters())  # only the latent was differentiated
    with torch.inference_mode():  # as in Lightning's validate/test
        in_inference = refine_latents(model.decode, plain, b.fields, b.coords, **SETTINGS)
    torch.testing.assert_close(in_inference, refined)


def test_masked_points_weigh_nothing(stage1):
    model, b = stage1
    mask = torch.ones(b.fields.shape[:2], dtype=torch.bool)
    mask[:, -16:] = False
    garbage = b.fields.clone()
    garbage[:, -16:] = 1e3
    other = b.fields.clone()
    other[:, -16:] = -7.0
    with torch.no_grad():
        plain = model.encode(b.fields, b.coords, b.meta)
    one = refine_latents(model.decode, plain, garbage, b.coords, mask=mask, **SETTINGS)
    two = refine_latents(model.decode, plain, other, b.coords, mask=mask, **SETTINGS)
    torch.testing.assert_close(one, two)


def test_the_operator_refines_every_encode_and_the_cache_knows_it(autoencoder_ckpt):
    kwargs = dict(autoencoder_ckpt=str(autoencoder_ckpt), operator={"dim": 16, "depth": 1, "num_heads": 2})
    plain_module = OperatorModule(**kwargs).eval()
    module = OperatorModule(**kwargs, latent_refinement={"steps": 3}).eval()
    assert module.hparams.latent_refinement == {"steps": 3, "lr": 2e-3, "points": 128}
    b = module.prepare_batch(next(iter(loader())))
    with torch.no_grad():
        plain = plain_module.encode(b.fields, b.coords, b.meta)
        expected = refine_latents(module.decode, plain, b.fields, b.coords, steps=3, lr=2e-3, points=128)
        torch.testing.assert_close(module.encode(b.fields, b.coords, b.meta), expected)
        assert (expected - plain).abs().max() > 1e-4
    # Latents cached without refinement must not serve a refining module (and the other way round).
    assert encoder_fingerprint(module) != encoder_fingerprint(plain_module)


@pytest.mark.parametrize("settings, message", [
    ({"steps": 0}, "steps must be an integer >= 1"),
    ({"points": 2.5}, "points must be an integer >= 1"),
    ({"lr": -1}, "lr must be a number > 0"),
    ({"step": 5}, "unknown keys"),
    (5, "must be null or a mapping"),
])
def test_bad_refinement_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        check_refinement(settings)


def test_the_config_check_refuses_bad_settings_before_anything_runs(tmp_path, autoencoder_ckpt):
    cfg = compose_train(["+experiment=burgers_upt", f"data_dir={tmp_path}", "stage2.latent_refinement={steps: 0}"])
    with pytest.raises(ConfigError, match="latent_refinement.steps must be an integer >= 1"):
        check_config(cfg)
    cfg = compose_train(["+experiment=burgers_upt", f"data_dir={tmp_path}", "freeze_autoencoder=false",
                         "stage2.latent_refinement={steps: 5}"])
    with pytest.raises(ConfigError, match="needs freeze_autoencoder=true"):
        check_config(cfg)
    with pytest.raises(ValueError, match="needs freeze_autoencoder=true"):
        OperatorModule(autoencoder_ckpt=str(autoencoder_ckpt), freeze_autoencoder=False, latent_refinement={})
