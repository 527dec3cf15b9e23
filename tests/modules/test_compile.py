"""model.compile: compiled encoder, operator and decoder give the eager step's loss and gradients."""

from __future__ import annotations

import copy

import pytest
import torch

from helpers.modules import TINY_OPERATOR, loader
from upt_lightning.modules import OperatorModule
from upt_lightning.modules.compile import compile_parts, compile_settings

# aot_eager traces the same graphs as the default inductor backend (dynamo capture, AOT autograd), without
# inductor's C++ code generation, which would cost minutes on a 2-core CI machine.
BACKEND = {"backend": "aot_eager"}


def _step(module, batch):
    torch.manual_seed(1)
    loss = module.training_step(batch, 0)
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in module.named_parameters() if p.grad is not None}


def test_compiled_and_eager_training_steps_agree(autoencoder_ckpt):
    eager = OperatorModule(autoencoder_ckpt=str(autoencoder_ckpt), operator=TINY_OPERATOR,
                           loss={"lambda_inv_enc": 0.01, "lambda_inv_dec": 0.01, "inverse_loss_warmup_epochs": 0},
                           sampling={"num_queries": 16}, freeze_autoencoder=False)
    compiled = copy.deepcopy(eager)
    assert compile_parts(compiled, BACKEND) == ["encoder", "operator", "decoder"]
    assert compiled.encoder._compiled_call_impl is not None
    batch = next(iter(loader()))
    for _ in range(2):  # the second call runs the cached graphs
        eager.zero_grad(set_to_none=True)
        compiled.zero_grad(set_to_none=True)
        loss_e, grads_e = _step(eager, batch)
        loss_c, grads_c = _step(compiled, batch)
        torch.testing.assert_close(loss_c, loss_e, rtol=1e-5, atol=1e-7)
        assert grads_c.keys() == grads_e.keys() and any(k.startswith("encoder.") for k in grads_e)
        for name in grads_e:
            torch.testing.assert_close(grads_c[name], grads_e[name], rtol=1e-4, atol=1e-6, msg=name)
    # Compiling in place keeps the checkpoint layout: the compiled module's weights load into an eager one.
    assert list(compiled.state_dict()) == list(eager.state_dict())
    # Another query count (validation decodes every point) reuses the dynamic graph and still agrees.
    points = batch["coords"][:, :40]
    latent = torch.randn(4, *compiled.encoder(batch["fields"], batch["coords"]).shape[1:])
    with torch.no_grad():
        torch.testing.assert_close(compiled.decoder(points, latent)["u"], eager.decoder(points, latent)["u"],
                                   rtol=1e-5, atol=1e-6)


def test_compile_settings_accept_booleans_and_torch_compile_arguments_only():
    assert compile_settings(False) is None and compile_settings(None) is None
    assert compile_settings(True) == {"dynamic": True}
    assert compile_settings({"mode": "max-autotune"}) == {"dynamic": True, "mode": "max-autotune"}
    with pytest.raises(ValueError, match="unknown keys.*speed"):
        compile_settings({"speed": "fast"})
    with pytest.raises(ValueError, match="must be true, false or a mapping"):
        compile_settings("yes")
