"""Latent refinement: better reconstructions, determinism, masks, inference mode, and the operator's encode."""

import pytest
import torch

from helpers.entry import compose_train
from helpers.modules import loader
from upt_lightning.data.latent_cache import encoder_fingerprint
from upt_lightning.errors import ConfigError
from upt_lightning.modules import AutoencoderModule, OperatorModule
from upt_lightning.models.refinement import check_inference_refinement, check_refinement, refine_latents
from upt_lightning.pipeline.config_checks import check_config

SETTINGS = {"steps": 50, "lr": 5e-2, "points": 64, "rate": "fixed"}
RESIDUAL = {"steps": 50, "lr": 0.25, "points": 64, "rate": "residual"}


@pytest.fixture()
def stage1(autoencoder_ckpt):
    model = AutoencoderModule.load_from_checkpoint(autoencoder_ckpt, weights_only=True).eval()
    batch = model.prepare_batch(next(iter(loader())))
    return model, batch


def reconstruction_error(model, latent, batch) -> float:
    return float((model.decode(latent, batch.coords) - batch.fields).pow(2).mean())


@pytest.mark.parametrize("settings", [SETTINGS, RESIDUAL], ids=["fixed", "residual"])
def test_refinement_lowers_the_reconstruction_error_and_is_deterministic(stage1, settings):
    model, b = stage1
    with torch.no_grad():
        plain = model.encode(b.fields, b.coords, b.meta)
        refined = refine_latents(model.decode, plain, b.fields, b.coords, **settings)
        assert reconstruction_error(model, refined, b) < 0.85 * reconstruction_error(model, plain, b)
    torch.testing.assert_close(refine_latents(model.decode, plain, b.fields, b.coords, **settings), refined,
                               rtol=0, atol=0)
    assert all(p.grad is None for p in model.decoder.parameters())  # only the latent was differentiated
    with torch.inference_mode():  # as in Lightning's validate/test
        in_inference = refine_latents(model.decode, plain, b.fields, b.coords, **settings)
    torch.testing.assert_close(in_inference, refined)


def test_the_residual_rate_scales_each_samples_step_with_its_error(stage1):
    """Fields offset from the decoded ones by a constant c_b have RMS residual |c_b| at any drawn points, and
    Adam's first update is +-1 per coordinate: one step moves sample b's tokens by lr * |c_b| each. A fixed
    rate moves a nearly exact sample as far as a poor one (the overshoot the residual rate avoids)."""
    model, b = stage1
    with torch.no_grad():
        latent = model.encode(b.fields, b.coords, b.meta)
        decoded = model.decode(latent, b.coords)
    offsets = torch.logspace(-4, -1, len(decoded))  # one per sample
    fields = decoded + offsets[:, None, None]
    residual = refine_latents(model.decode, latent, fields, b.coords, steps=1, lr=0.25, points=32, rate="residual")
    moved = (residual - latent).abs().mean((1, 2))
    torch.testing.assert_close(moved, 0.25 * offsets, rtol=2e-2, atol=0)
    fixed = refine_latents(model.decode, latent, fields, b.coords, steps=1, lr=2e-3, points=32, rate="fixed")
    torch.testing.assert_close((fixed - latent).abs().mean((1, 2)), torch.full_like(offsets, 2e-3), rtol=2e-2, atol=0)
    # A nearly exact sample: the fixed rate makes its reconstruction worse, the residual rate keeps it.
    with torch.no_grad():
        before = (decoded - fields)[0].pow(2).mean()
        assert (model.decode(fixed, b.coords) - fields)[0].pow(2).mean() > 10 * before
        assert (model.decode(residual, b.coords) - fields)[0].pow(2).mean() < 1.01 * before


@pytest.mark.parametrize("settings", [SETTINGS, RESIDUAL], ids=["fixed", "residual"])
def test_masked_points_weigh_nothing(stage1, settings):
    """Padding enters neither the gradient nor, with the residual rate, the step size."""
    model, b = stage1
    mask = torch.ones(b.fields.shape[:2], dtype=torch.bool)
    mask[:, -16:] = False
    garbage = b.fields.clone()
    garbage[:, -16:] = 1e3
    other = b.fields.clone()
    other[:, -16:] = -7.0
    with torch.no_grad():
        plain = model.encode(b.fields, b.coords, b.meta)
    one = refine_latents(model.decode, plain, garbage, b.coords, mask=mask, **settings)
    two = refine_latents(model.decode, plain, other, b.coords, mask=mask, **settings)
    torch.testing.assert_close(one, two)
    assert (one - plain).abs().max() > 1e-4  # it did refine


def test_the_operator_refines_every_encode_and_the_cache_knows_it(autoencoder_ckpt):
    kwargs = dict(autoencoder_ckpt=str(autoencoder_ckpt), operator={"dim": 16, "depth": 1, "num_heads": 2})
    plain_module = OperatorModule(**kwargs).eval()
    module = OperatorModule(**kwargs, latent_refinement={"steps": 3}).eval()
    assert module.hparams.latent_refinement == {"steps": 3, "lr": 2e-3, "points": 128, "rate": "fixed"}
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
    ({"lr": -1}, "lr must be a finite number > 0"),
    ({"step": 5}, "unknown keys"),
    ({"rate": "adaptive"}, "rate must be one of"),
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


# ------------------------------------------------------------------ inference refinement, carried correction
INFERENCE = {"steps": 4, "lr": 0.5, "points": 32, "rate": "residual", "carry": 0.5}


@pytest.fixture()
def operator(autoencoder_ckpt):
    torch.manual_seed(0)
    return OperatorModule(autoencoder_ckpt=str(autoencoder_ckpt), operator={"dim": 16, "depth": 1, "num_heads": 2},
                          inference_refinement=INFERENCE).eval()


def test_predictions_decode_the_operators_latent_plus_the_carried_correction(operator):
    """Step k decodes F^k(z) + carry^k * (refine(z) - z): the operator steps from the encoder's latent z, as in
    training, and the correction decays geometrically. Without the option the rollout is the plain one."""
    batch = next(iter(loader(horizon=3)))
    fields, coords = batch["fields"], batch["coords"]
    refined = operator.rollout(fields, coords, 3)
    norm = operator.normalizer
    with torch.no_grad():
        points, normalised = norm.normalize_coords(coords), norm.normalize_fields(fields)
        latent = operator.encode(normalised, points, operator.encoder_meta(None))
        correction = refine_latents(operator.decode, latent, normalised, points, steps=4, lr=0.5, points=32,
                                    rate="residual") - latent
        assert correction.abs().mean() > 1e-4  # not trivially zero
        expected, z = [], latent
        for k in range(1, 4):
            z = operator.step(z, norm.normalize_dt(norm.dt_ref).reshape(-1).expand(len(fields)))
            expected.append(norm.denormalize_fields(operator.decode(z + 0.5**k * correction, points)))
    torch.testing.assert_close(refined, torch.stack(expected, 1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(operator(fields, coords), refined[:, 0], rtol=1e-5, atol=1e-6)  # one step alike
    # Other query points get the same correction (it lives in the latent, not at the input's points).
    torch.testing.assert_close(operator.rollout(fields, coords, 3, query_points=coords.clone()), refined)
    # Physical mode re-encodes every step: nothing is carried.
    physical = operator.rollout(fields, coords, 2, mode="physical")
    operator.hparams["inference_refinement"] = None
    torch.testing.assert_close(operator.rollout(fields, coords, 2, mode="physical"), physical)
    plain = operator.rollout(fields, coords, 3)
    assert (plain - refined).abs().max() > 1e-5


def test_the_correction_lowers_the_reconstruction_error_the_rollout_starts_from(operator):
    operator.hparams["inference_refinement"] = check_inference_refinement({"steps": 30, "lr": 0.5, "points": 64})
    batch = operator.prepare_batch(next(iter(loader())))
    with torch.no_grad():
        latent, correction = operator.model.start(batch.fields, batch.coords, batch.meta)
        plain = (operator.decode(latent, batch.coords) - batch.fields).pow(2).mean()
        corrected = (operator.decode(latent + correction, batch.coords) - batch.fields).pow(2).mean()
    assert corrected < 0.85 * plain, (corrected, plain)


def test_inference_refinement_settings_are_checked_and_stored(autoencoder_ckpt, tmp_path):
    kwargs = dict(autoencoder_ckpt=str(autoencoder_ckpt), operator={"dim": 16, "depth": 1, "num_heads": 2})
    module = OperatorModule(**kwargs, inference_refinement={})
    assert module.hparams.inference_refinement == {"steps": 20, "lr": 0.15, "points": 128, "rate": "residual",
                                                   "carry": 0.7}
    assert OperatorModule(**kwargs).hparams.inference_refinement is None
    # Training is unchanged, so latents cached for a plain module serve this one.
    assert encoder_fingerprint(module) == encoder_fingerprint(OperatorModule(**kwargs))
    for settings, message in [({"carry": 1.5}, r"carry must be in \(0, 1\]"),
                              ({"carry": 0}, "carry must be a finite number > 0"),
                              ({"steps": 0}, "steps must be an integer >= 1"), ({"decay": 1}, "unknown keys")]:
        with pytest.raises(ValueError, match=message):
            check_inference_refinement(settings)
    cfg = compose_train(["+experiment=burgers_upt", f"data_dir={tmp_path}",
                         "stage2.inference_refinement={carry: 2}"])
    with pytest.raises(ConfigError, match=r"inference_refinement.carry must be in \(0, 1\]"):
        check_config(cfg)


def test_a_samples_refined_latent_does_not_depend_on_its_batch(stage1):
    """One draw of points per step for every sample: a sample refines alike alone, in another batch or on
    another DDP rank."""
    model, b = stage1
    with torch.no_grad():
        plain = model.encode(b.fields, b.coords, b.meta)
    for settings in (SETTINGS, RESIDUAL):
        whole = refine_latents(model.decode, plain, b.fields, b.coords, **settings)
        part = refine_latents(model.decode, plain[1:3], b.fields[1:3], b.coords[1:3], **settings)
        torch.testing.assert_close(part, whole[1:3], rtol=1e-5, atol=1e-6)
