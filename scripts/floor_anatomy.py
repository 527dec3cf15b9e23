"""Where a stage-1 autoencoder's reconstruction error sits, on the validation trajectories of a grid file.

A prediction cannot beat its own decoder, so this is where one-step accuracy is lost. Reports the validation
nRMSE (physical units, per sample and channel, all points, as the pipeline's metric) and splits it up:

- by frame (initial states against late ones);
- by position inside an encoder patch (2D grids, one token per patch): larger at the edges means the
  decoder's blending between neighbouring tokens is where it loses accuracy;
- by wavenumber: the share of the error's energy above ``|k|`` thresholds beside the data's own share, and the
  nRMSE left after the reconstruction is low-passed at ``--band`` (what a perfectly smooth decoder would keep);
- encoder against decoder: the latents are optimised for ``--autodecode-steps`` Adam steps against the frames
  with the decoder frozen; how far the error falls is how much better the decoder could do with better latents.

    python scripts/floor_anatomy.py RUN/stage1/checkpoints/autoencoder.ckpt data/burgers2d_r64_n256.h5 \
        --out anatomy.json

The split is the pipeline's (``data.split``, ``seed``); give ``--split-seed`` if the run changed ``seed``.
"""

from __future__ import annotations

import argparse
import json

import torch

from upt_lightning.data.readers import open_source
from upt_lightning.data.split_stats import split_trajectories
from upt_lightning.modules import AutoencoderModule


def nrmse(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """(F, N, C) -> (F,): per frame and channel ``||pred - true|| / ||true||`` over the points, mean over channels."""
    return ((pred - true).norm(dim=1) / true.norm(dim=1).clamp_min(1e-12)).mean(-1)


def wavenumbers(grid: tuple[int, ...]) -> torch.Tensor:
    """|k| of every FFT coefficient of a grid (integer wavenumbers per axis), shape ``grid``."""
    axes = torch.meshgrid(*[torch.fft.fftfreq(n, 1.0 / n) for n in grid], indexing="ij")
    return torch.stack(axes).pow(2).sum(0).sqrt()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", help="a stage-1 AutoencoderModule checkpoint (autoencoder.ckpt)")
    p.add_argument("path", help="the grid file it was trained on")
    p.add_argument("--split", type=float, nargs=3, default=(0.8, 0.1, 0.1))
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--band", type=float, default=8.0, help="low-pass the reconstruction at this |k|")
    p.add_argument("--autodecode-steps", type=int, default=100)
    p.add_argument("--max-trajectories", type=int, default=8, help="validation trajectories to use")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="write the figures as JSON")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)

    model = AutoencoderModule.load_from_checkpoint(a.checkpoint, weights_only=True, map_location="cpu").eval()
    model.requires_grad_(False)
    source = open_source(a.path)
    grid = source.grid_shape
    if grid is None:
        raise SystemExit(f"{a.path} is not a grid file: the spectral and patch figures need a grid")
    _, val_ids, _ = split_trajectories(source.num_trajectories, a.split, a.split_seed)
    val_ids = list(val_ids)[: a.max_trajectories]
    steps = source.num_steps(val_ids[0])
    frames = torch.stack([source.frames(t, list(range(steps))) for t in val_ids]).float()  # (S, T, N, C)
    coords = source.coords(val_ids[0]).float()
    flat = frames.flatten(0, 1)
    norm = model.normalizer
    points = norm.normalize_coords(coords).expand(len(flat), -1, -1)
    meta = model.encoder_meta(None)
    with torch.no_grad():
        latents = torch.cat([model.encode(norm.normalize_fields(x), points[: len(x)], meta) for x in flat.split(64)])
        recon = torch.cat([norm.denormalize_fields(model.decode(z, points[: len(z)])) for z in latents.split(64)])
    per_frame = nrmse(recon, flat).reshape(len(val_ids), steps)
    report: dict = {"checkpoint": a.checkpoint, "trajectories": len(val_ids), "nrmse": per_frame.mean().item(),
                    "nrmse_by_frame": [round(v, 5) for v in per_frame.mean(0).tolist()]}

    error = (recon - flat).reshape(len(flat), *grid, -1)
    encoder = model.encoder
    patch = getattr(encoder, "patch_size", None)
    if len(grid) == 2 and patch is not None and getattr(encoder, "pooling", None) == "patch":
        rms = error.pow(2).mean((0, -1))  # (X, Y)
        by_pos = rms.reshape(grid[0] // patch[0], patch[0], grid[1] // patch[1], patch[1]).mean((0, 2)).sqrt()
        report["rms_error_in_patch_relative"] = [[round(v, 2) for v in row] for row in (by_pos / by_pos.mean()).tolist()]

    dims = tuple(range(1, len(grid) + 1))
    k = wavenumbers(tuple(grid))
    err_power = torch.fft.fftn(error, dim=dims).abs().pow(2).sum((0, -1))
    true_power = torch.fft.fftn(flat.reshape(error.shape), dim=dims).abs().pow(2).sum((0, -1))
    report["error_energy_above_k"] = {str(c): round((err_power[k > c].sum() / err_power.sum()).item(), 4)
                                      for c in (2, 4, 8, 16)}
    report["data_energy_above_k"] = {str(c): float(f"{(true_power[k > c].sum() / true_power.sum()).item():.3g}")
                                     for c in (2, 4, 8, 16)}
    keep = (k <= a.band).to(error.dtype)[None, ..., None]
    smooth = torch.fft.ifftn(torch.fft.fftn(recon.reshape(error.shape), dim=dims) * keep, dim=dims).real
    report[f"nrmse_lowpassed_k{a.band:g}"] = nrmse(smooth.reshape(flat.shape), flat).mean().item()

    if a.autodecode_steps:
        target = norm.normalize_fields(flat[::4])
        z = latents[::4].clone().requires_grad_(True)
        opt = torch.optim.Adam([z], lr=1e-3)
        for _ in range(a.autodecode_steps):
            loss = (model.decode(z, points[: len(z)]) - target).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            before = nrmse(recon[::4], flat[::4]).mean().item()
            after = nrmse(norm.denormalize_fields(model.decode(z, points[: len(z)])), flat[::4]).mean().item()
        report["autodecode"] = {"steps": a.autodecode_steps, "frames": len(z), "nrmse_encoder_latents": before,
                                "nrmse_optimised_latents": after}
    print(json.dumps(report, indent=1))
    if a.out:
        with open(a.out, "w") as fh:
            json.dump(report, fh, indent=1)


if __name__ == "__main__":
    main()
