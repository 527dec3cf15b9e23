"""Benchmark ``rollout``: latent rollout against physical rollout with the same model.

Latent mode encodes once and steps the operator in latent space; physical mode decodes and
re-encodes the full grid after every step. Latent mode is timed twice: decoding only the last
step (what a user who asks for one horizon pays) and decoding every step (a full trajectory).
Physical mode is timed as ``OperatorModule.rollout`` runs it (which decodes each step twice when
the query points are the grid: once for the output, once for re-encoding) and as
:func:`physical_rollout_one_decode` (the output is what gets re-encoded), the fair baseline.
"""

from __future__ import annotations

import torch

from upt_lightning.bench.options import BenchOptions
from upt_lightning.bench.presets import load_model_preset
from upt_lightning.bench.report import BenchResult, Column, Target
from upt_lightning.bench.timing import median_time
from upt_lightning.bench.workloads import grid_batch, grid_operator_module

QUICK = {"preset": "tiny", "grid": (32, 32), "batch": 1, "steps": (2, 5, 10), "repeats": 2}
FULL = {"preset": "small", "grid": (64, 64), "batch": 4, "steps": (10, 50, 100), "repeats": 3}

COLUMNS = [
    Column("steps", "steps", "{:d}"), Column("latent_final_s", "latent, last step decoded s"),
    Column("latent_all_s", "latent, every step decoded s"), Column("physical_s", "physical (rollout) s"),
    Column("physical_one_decode_s", "physical, one decode s"),
    Column("speedup_final", "physical one decode / latent last", "{:.1f}"),
    Column("speedup_all", "physical one decode / latent every", "{:.1f}"),
]


@torch.no_grad()
def physical_rollout_one_decode(module, fields: torch.Tensor, coords: torch.Tensor, steps: int) -> torch.Tensor:
    """Raw fields (B, N, C) on the grid -> raw predictions (B, steps, N, C), decoding once per step."""
    norm = module.normalizer
    points, meta = norm.normalize_coords(coords), module.encoder_meta(None)
    dt = norm.normalize_dt(norm.dt_ref).reshape(-1).expand(fields.shape[0])
    latent = module.encode(norm.normalize_fields(fields), points, meta)
    outputs = []
    for k in range(steps):
        outputs.append(module.decode(module.step(latent, dt), points))
        if k < steps - 1:
            latent = module.encode(outputs[-1], points, meta)
    return norm.denormalize_fields(torch.stack(outputs, dim=1))


def run(options: BenchOptions) -> BenchResult:
    sizes = options.pick(QUICK, FULL)
    device = options.device
    torch.manual_seed(0)
    module = grid_operator_module(load_model_preset(sizes["preset"]), sizes["grid"], device=device).eval()
    batch = grid_batch(sizes["batch"], sizes["grid"], device=device)
    fields, coords = batch["fields"], batch["coords"]

    def timed(steps: int, mode: str, decode_steps=None) -> float:
        return median_time(
            lambda: module.rollout(fields, coords, steps, mode=mode, decode_steps=decode_steps),
            sizes["repeats"], device=device,
        ).median_s

    rows = []
    for steps in sizes["steps"]:
        row = {
            "steps": steps,
            "latent_final_s": timed(steps, "latent", [steps]),
            "latent_all_s": timed(steps, "latent"),
            "physical_s": timed(steps, "physical"),
            "physical_one_decode_s": median_time(
                lambda: physical_rollout_one_decode(module, fields, coords, steps), sizes["repeats"], device=device
            ).median_s,
        }
        row["speedup_final"] = row["physical_one_decode_s"] / row["latent_final_s"]
        row["speedup_all"] = row["physical_one_decode_s"] / row["latent_all_s"]
        rows.append(row)
    reference = rows[len(rows) // 2]
    summary = {
        "reference_steps": reference["steps"],
        "latent_speedup": reference["speedup_final"],
        "latent_all_decoded_speedup": reference["speedup_all"],
        "latent_speedup_vs_rollout_physical": reference["physical_s"] / reference["latent_final_s"],
    }
    return BenchResult(
        name="rollout",
        title=f"Rollout time, latent vs physical ({sizes['preset']} model, grid {sizes['grid']}, "
              f"batch {sizes['batch']})",
        columns=COLUMNS,
        rows=rows,
        summary=summary,
        targets=[Target(f"latent rollout speed-up at {reference['steps']} steps", summary["latent_speedup"],
                        10.0, at_most=False)],
        settings={**sizes},
        notes=["Under torch.no_grad. Speed-ups are against the physical rollout with one decode per step; "
               "OperatorModule.rollout(mode='physical') decodes the grid twice per step (output, re-encoding)."],
    )
