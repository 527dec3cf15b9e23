"""Stage-1 probe: how fast an encoder/decoder pair learns to reconstruct a grid data set.

A plain training loop (no Lightning, no validation between epochs) over the library's own models,
for comparing architectures at equal optimiser steps; docs/accuracy.md lists what it measured.
Reads a 2D file of the PDEBench per-sample-group layout (``python -m upt_lightning.data.generate
burgers2d --out data``), keeps 80% of the trajectories for training and reports the mean per-sample
nRMSE (physical units, all points) on every 4th frame of the next 10%.

    python scripts/stage1_probe.py data/burgers2d_64.h5 --steps 900 --tokens 64 --ldim 64 \
        --enc '{"patch_size": 8, "dim": 96, "depth": 2, "num_heads": 4, "pooling": "patch"}' \
        --dec '{"dim": 128, "depth": 1, "num_heads": 4, "num_frequencies": 6}' --lr 2e-3 --q 128 --bs 32

``--muon 5e-3`` trains the weight matrices with Muon (the default experiment's optimiser); ``--ema 0.999``
also reports the reconstruction error of an exponential moving average of the weights (last column).
Each log row is [step, seconds, training loss, val nRMSE, val nRMSE of the reconstruction low-passed at
``|k| <= --band`` on 2D grids (the error a perfectly smooth decoder would keep), val nRMSE at the points half
a cell off the grid in both axes against the exact (spectrally shifted) fields on 2D grids (what zero-shot
super-resolution asks of the decoder), EMA's val nRMSE].
``--schedule linear`` or ``exp:0.01`` replaces the cosine after the warm-up, ``--ns-steps`` sets Muon's Newton-Schulz
iterations, ``--frame-power 0.5`` draws frame t of a trajectory with weight (t + 1)^-0.5 instead of uniformly.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import h5py
import numpy as np
import torch

from upt_lightning.modules import optim as optim_module
from upt_lightning.models.builders import build_decoder, build_encoder
from upt_lightning.modules.optim import build_optimizer


def decay_factor(schedule: str):
    """An ``lr_factor`` replacement: linear warm-up, then ``linear`` to zero or ``exp:FINAL`` (geometric to FINAL)."""

    def factor(step, total, warmup, scheduler, min_lr_ratio, time_fraction=0.0):
        if step < warmup:
            return (step + 1) / warmup
        progress = min(max(step - warmup, 0) / max(total - warmup, 1), 1.0)
        if schedule == "linear":
            return 1.0 - progress
        return float(schedule.split(":")[1]) ** progress

    if schedule != "linear" and not schedule.startswith("exp:"):
        raise SystemExit(f"--schedule {schedule!r}: use cosine, linear or exp:FINAL")
    return factor


def load(path: str) -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...], int]:
    """Train and val frames (F, N, C) of a 2D per-sample-group file, its grid shape and frames per trajectory."""
    with h5py.File(path, "r") as f:
        keys = sorted(k for k in f.keys() if "data" in f[k])
        data = np.stack([f[k]["data"][:] for k in keys])  # (S, T, X, Y, C)
    grid = data.shape[2:-1]
    perm = np.random.default_rng(0).permutation(len(keys))
    n_train, n_val = int(0.8 * len(keys)), int(0.1 * len(keys))
    frames = lambda ids: torch.from_numpy(data[ids]).reshape(-1, int(np.prod(grid)), data.shape[-1])  # noqa: E731
    return frames(perm[:n_train]), frames(perm[n_train:n_train + n_val])[::4], grid, data.shape[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("path")
    p.add_argument("--enc", default='{"patch_size": 8, "dim": 96, "depth": 2, "num_heads": 4}')
    p.add_argument("--dec", default='{"dim": 96, "depth": 2, "num_heads": 4, "num_frequencies": 6}')
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--ldim", type=int, default=64)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--bs", type=int, default=16)
    p.add_argument("--q", type=int, default=512, help="query points per sample")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--muon", type=float, default=0.0,
                   help="Muon for the weight matrices at this rate, AdamW at --lr for the rest (0: AdamW for all)")
    p.add_argument("--ema", type=float, default=0.0, help="evaluate an EMA of the weights with this decay (0: off)")
    p.add_argument("--schedule", default="cosine", help="cosine, linear or exp:FINAL after the warm-up")
    p.add_argument("--ns-steps", type=int, default=5, help="Muon's Newton-Schulz iterations")
    p.add_argument("--frame-power", type=float, default=0.0,
                   help="draw frame t of a trajectory with weight (t + 1)^-power (0: uniformly)")
    p.add_argument("--loss", default="mse", choices=["mse", "relative", "relative-sqrt"],
                   help="mse of the normalised fields; relative: each sample's and channel's squared error over its "
                        "mean square (physical units, what nRMSE divides by); relative-sqrt: over its RMS")
    p.add_argument("--band", type=float, default=8.0, help="|k| of the low-passed column (2D grids)")
    p.add_argument("--out", default=None, help="append the result as a JSON line to this file")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    train, val, grid, steps_per_trajectory = load(a.path)
    channels = train.shape[-1]
    spec = {f"c{i}": 1 for i in range(channels)}
    mean, std = train.mean((0, 1)), train.std((0, 1))
    axes = torch.meshgrid(*[(torch.arange(n) + 0.5) / n for n in grid], indexing="ij")
    coords = torch.stack(axes, -1).reshape(1, -1, len(grid))
    enc = build_encoder({"kind": "grid", **json.loads(a.enc)}, spec, grid, len(grid), a.tokens, a.ldim)
    dec = build_decoder(json.loads(a.dec), spec, len(grid), a.ldim)
    params = [*enc.parameters(), *dec.parameters()]
    muon = dict(optimizer="muon", muon_lr_ratio=a.muon / a.lr) if a.muon else {}
    if a.schedule != "cosine":
        optim_module.lr_factor = decay_factor(a.schedule)  # build_optimizer's schedule reads it at every step
    built = build_optimizer(params, a.lr, a.steps, **muon)
    opt, schedule = built["optimizer"], built["lr_scheduler"]["scheduler"]
    for group in opt.param_groups:
        group["ns_steps"] = a.ns_steps
    ema = None
    if a.ema:
        ema = torch.optim.swa_utils.AveragedModel(
            torch.nn.ModuleList([enc, dec]), multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(a.ema))
    split = lambda x: {f"c{i}": x[..., i:i + 1] for i in range(channels)}  # noqa: E731
    join = lambda d: torch.cat([d[f"c{i}"] for i in range(channels)], -1)  # noqa: E731

    keep = None
    if len(grid) == 2:  # the wavenumbers a low-passed reconstruction keeps
        k = torch.stack(torch.meshgrid(*[torch.fft.fftfreq(n, 1.0 / n) for n in grid], indexing="ij")).pow(2).sum(0)
        keep = (k.sqrt() <= a.band).float()[None, :, :, None]

    def relative(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return (((y - x) ** 2).sum(1).sqrt() / (x ** 2).sum(1).sqrt()).mean(1)

    shifted, shift_phase = None, None
    if len(grid) == 2:  # points half a cell off the grid, and the exact fields there (the data are band-limited)
        shifted = (coords + 0.5 / torch.tensor(grid, dtype=coords.dtype)) % 1.0
        freqs = torch.meshgrid(*[torch.fft.fftfreq(n, 1.0 / n) for n in grid], indexing="ij")
        shift_phase = torch.exp(2j * math.pi * sum(f * 0.5 / n for f, n in zip(freqs, grid)))[None, :, :, None]

    @torch.no_grad()
    def val_nrmse(use_ema: bool = False) -> tuple[float, float, float]:
        """Validation nRMSE of the reconstruction, of it low-passed at --band, and at points half a cell off
        the grid (the last two nan off 2D grids)."""
        enc_, dec_ = (ema.module[0], ema.module[1]) if use_ema else (enc, dec)
        enc_.eval(), dec_.eval()
        errors, smooth, off_grid = [], [], []
        for x in val.split(32):
            c = coords.expand(len(x), -1, -1)
            latent = enc_(split((x - mean) / std), c)
            y = join(dec_(c, latent)) * std + mean
            errors.append(relative(y, x))
            if keep is not None:
                image = y.reshape(len(x), *grid, channels)
                low = torch.fft.ifft2(torch.fft.fft2(image, dim=(1, 2)) * keep, dim=(1, 2)).real
                smooth.append(relative(low.reshape(y.shape), x))
                truth = torch.fft.ifft2(torch.fft.fft2(x.reshape(image.shape), dim=(1, 2)) * shift_phase,
                                        dim=(1, 2)).real.reshape(x.shape)
                between = join(dec_(shifted.expand(len(x), -1, -1), latent)) * std + mean
                off_grid.append(relative(between, truth))
        enc_.train(), dec_.train()
        nan = math.nan
        return (torch.cat(errors).mean().item(), torch.cat(smooth).mean().item() if smooth else nan,
                torch.cat(off_grid).mean().item() if off_grid else nan)

    # Frame t of a trajectory (frames are stored trajectory by trajectory) drawn with weight (t + 1)^-power.
    frame_weights = (torch.arange(len(train)) % steps_per_trajectory + 1.0) ** -a.frame_power

    start, log = time.time(), []
    for step in range(1, a.steps + 1):
        if a.frame_power:
            x = (train[torch.multinomial(frame_weights, a.bs, replacement=True)] - mean) / std
        else:
            x = (train[torch.randint(0, len(train), (a.bs,))] - mean) / std
        c = coords.expand(a.bs, -1, -1)
        pick = torch.rand(a.bs, x.shape[1]).argsort(1)[:, :a.q, None]
        squared = (join(dec(torch.gather(c, 1, pick.expand(-1, -1, len(grid))), enc(split(x), c)))
                   - torch.gather(x, 1, pick.expand(-1, -1, channels))) ** 2
        if a.loss == "mse":
            loss = squared.mean()
        else:
            scale = ((x * std + mean) ** 2).mean(1)  # (B, C): each sample's mean square over the whole field
            scale = scale if a.loss == "relative" else scale.sqrt()
            loss = ((squared * std ** 2).mean(1) / scale).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
        if ema is not None:
            ema.update_parameters(torch.nn.ModuleList([enc, dec]))
        if step % max(a.steps // 5, 1) == 0:
            plain, lowpassed, between = val_nrmse()
            log.append([step, round(time.time() - start, 1), round(loss.item(), 5), round(plain, 4),
                        round(lowpassed, 4), round(between, 4)]
                       + ([round(val_nrmse(True)[0], 4)] if ema is not None else []))
            print(log[-1], flush=True)
    result = {"args": vars(a), "seconds": round(time.time() - start, 1), "val_nrmse": log[-1][3],
              "val_nrmse_lowpassed": log[-1][4], "val_nrmse_off_grid": log[-1][5], "log": log}
    print(json.dumps(result))
    if a.out:
        with open(a.out, "a") as fh:
            fh.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
