"""Benchmark ``rollout``: latent rollout against physical rollout with the same model.

Latent mode encodes once and steps the operator in latent space; physical mode decodes and
re-encodes the full grid after every step. Latent mode is timed twice: decoding only the last
step (what a user who asks for one horizon pays) and decoding every step (a full trajectory).
"""

from __future__ import annotations

import torch

from upt_lightning.bench.options import BenchOptions
from upt_lightning.bench.report import BenchResult, Column, Target
from upt_lightning.bench.timing import median_time
from upt_lightning.bench.workloads import grid_batch, grid_operator_module, load_model_preset

QUICK = {"preset": "tiny", "grid": (64, 64), "batch": 1, "steps": (2, 5, 10), "repeats": 2}
FULL = {"preset": "small", "grid": (64, 64), "batch": 4, "steps": (10, 50, 100), "repeats": 3}

COLUMNS = [
    Column("steps", "steps", "{:d}"), Column("latent_final_s", "latent, last step decoded s"),
    Column("latent_all_s", "latent, every step decoded s"), Column("physical_s", "physical s"),
    Column("speedup_final", "physical / latent (last)", "{:.1f}"),
    Column("speedup_all", "physical / latent (every)", "{:.1f}"),
]


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
        }
        row["speedup_final"] = row["physical_s"] / row["latent_final_s"]
        row["speedup_all"] = row["physical_s"] / row["latent_all_s"]
        rows.append(row)
    reference = rows[len(rows) // 2]
    summary = {
        "reference_steps": reference["steps"],
        "latent_speedup": reference["speedup_final"],
        "latent_all_decoded_speedup": reference["speedup_all"],
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
        notes=["OperatorModule.rollout under torch.no_grad; physical mode decodes every step (its outputs) and "
               "re-encodes the decoded grid."],
    )
