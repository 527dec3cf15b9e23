"""bf16-mixed (trainer=gpu's precision) on the CPU: both stages train, the loss stays close to fp32, and every
attention layer still runs through scaled_dot_product_attention in bf16."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from helpers.modules import TINY_OPERATOR, loader, make_trainer, tiny_autoencoder
from upt_lightning.modules import OperatorModule


def _operator(autoencoder_ckpt):
    return OperatorModule(autoencoder_ckpt=str(autoencoder_ckpt), operator=TINY_OPERATOR,
                          loss={"lambda_inv_enc": 0.01, "lambda_inv_dec": 0.01, "inverse_loss_warmup_epochs": 0},
                          sampling={"num_queries": 16})


def test_both_stages_train_in_bf16_mixed(autoencoder_ckpt):
    stages = ((tiny_autoencoder(sampling={"num_queries": 32}), "encoder"), (_operator(autoencoder_ckpt), "operator"))
    for module, trained in stages:
        before = {k: v.clone() for k, v in getattr(module, trained).state_dict().items()}
        trainer = make_trainer(max_steps=3, limit_val_batches=0, precision="bf16-mixed")
        trainer.fit(module, train_dataloaders=loader())
        after = getattr(module, trained).state_dict()
        assert any(not torch.equal(after[k], v) for k, v in before.items()), f"{trained} did not train"
        assert all(torch.isfinite(p).all() for p in module.parameters())
        assert all(p.dtype == torch.float32 for p in module.parameters())  # mixed: weights stay fp32


def test_bf16_loss_is_close_to_fp32_and_attention_stays_on_sdpa(autoencoder_ckpt, monkeypatch):
    module = _operator(autoencoder_ckpt)
    batch = next(iter(loader()))
    torch.manual_seed(3)
    fp32 = module.training_step(batch, 0).detach()

    calls = []
    sdpa = F.scaled_dot_product_attention

    def recording(query, key, value, *args, **kwargs):
        calls.append((query.dtype, kwargs.get("attn_mask") is not None))
        return sdpa(query, key, value, *args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", recording)
    torch.manual_seed(3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = module.training_step(batch, 0).detach()
    assert torch.isfinite(bf16)
    torch.testing.assert_close(bf16.float(), fp32, rtol=0.05, atol=1e-4)
    # encoder, operator and decoder layers all went through SDPA, in bf16; the locality bias is its mask.
    assert len(calls) >= 3 and all(dtype == torch.bfloat16 for dtype, _ in calls)
    assert any(masked for _, masked in calls)
