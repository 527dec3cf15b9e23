"""Benchmark ``rollout``: latent rollout against physical rollout with the same model.

Latent mode encodes once and steps the operator in latent space; physical mode decodes and
re-encodes the full grid after every step. Latent mode is timed twice: decoding only the last
step (what a user who asks for one horizon pays) and decoding every step (a full trajectory).
Physical mode is timed as ``OperatorModule.rollout`` runs it and as :func:`physical_rollout_one_decode`,
a plain loop that re-encodes its own output. Both decode the grid once per step (the run counts the
decodes of ``rollout`` and says so in its notes), so their times agree.

Beside it, in the same run and on the same batch, the FNO baseline (``conf/model/fno.yaml``) rolls out
on 64x64 and 128x128 against a UPT latent rollout on the same grid (table ``fno``); without
neuraloperator installed those rows are skipped with a note.
"""

from __future__ import annotations

import torch

from upt_lightning.baselines import require_neuralop
from upt_lightning.baselines.neuralop_import import INSTALL_HINT
from upt_lightning.bench.options import BenchOptions
from upt_lightning.bench.presets import load_model_preset
from upt_lightning.bench.report import BenchResult, Column, SubTable, Target
from upt_lightning.bench.timing import interleaved_times, median_time
from upt_lightning.bench.workloads import grid_batch, grid_fno_module, grid_operator_module
from upt_lightning.errors import ConfigError

QUICK = {"preset": "tiny", "grid": (32, 32), "batch": 1, "steps": (2, 5, 10), "repeats": 2,
         "fno_grids": ((16, 16), (32, 32)), "fno_steps": (2, 5)}
FULL = {"preset": "small", "grid": (64, 64), "batch": 4, "steps": (10, 50, 100), "repeats": 3,
        "fno_grids": ((64, 64), (128, 128)), "fno_steps": (10, 50)}

COLUMNS = [
    Column("steps", "steps", "{:d}"), Column("latent_final_s", "latent, last step decoded s"),
    Column("latent_all_s", "latent, every step decoded s"), Column("physical_s", "physical (rollout) s"),
    Column("physical_one_decode_s", "physical, one decode s"),
    Column("speedup_final", "physical one decode / latent last", "{:.1f}"),
    Column("speedup_all", "physical one decode / latent every", "{:.1f}"),
]
FNO_COLUMNS = [
    Column("grid", "grid"), Column("steps", "steps", "{:d}"),
    Column("upt_latent_final_s", "UPT latent, last decoded s"),
    Column("upt_latent_all_s", "UPT latent, every step decoded s"), Column("fno_s", "FNO s"),
    Column("fno_over_upt_latent_all", "FNO / UPT every step", "{:.2f}"),
    Column("fno_over_upt_latent_final", "FNO / UPT last", "{:.2f}"),
]


def fno_rows(sizes: dict, device: torch.device) -> list[dict]:
    """FNO rollouts beside UPT latent rollouts on the same grid and batch, timed in interleaved rounds.

    The FNO computes every step on the grid, so "UPT, every step decoded" is the like-for-like figure;
    "UPT, last decoded" is what UPT costs when only the final state is wanted.
    """
    rows = []
    for grid in sizes["fno_grids"]:
        torch.manual_seed(0)
        upt = grid_operator_module(load_model_preset(sizes["preset"]), grid, device=device).eval()
        fno = grid_fno_module(load_model_preset("fno"), grid, device=device).eval()
        batch = grid_batch(sizes["batch"], grid, device=device)
        fields, coords = batch["fields"], batch["coords"]
        for steps in sizes["fno_steps"]:
            times = interleaved_times({
                "upt_latent_final_s": lambda: upt.rollout(fields, coords, steps, decode_steps=[steps]),
                "upt_latent_all_s": lambda: upt.rollout(fields, coords, steps),
                "fno_s": lambda: fno.rollout(fields, coords, steps),
            }, sizes["repeats"], device=device)
            row = {"grid": "x".join(str(n) for n in grid), "steps": steps,
                   **{key: timing.median_s for key, timing in times.items()}}
            row["fno_over_upt_latent_all"] = row["fno_s"] / row["upt_latent_all_s"]
            row["fno_over_upt_latent_final"] = row["fno_s"] / row["upt_latent_final_s"]
            rows.append(row)
    return rows


@torch.no_grad()
def physical_decodes_per_step(module, fields: torch.Tensor, coords: torch.Tensor, steps: int) -> float:
    """Decoder calls per step of ``module.rollout(mode="physical")`` at the grid, counted with a hook."""
    calls = []
    handle = module.decoder.register_forward_hook(lambda *_: calls.append(1))
    try:
        module.rollout(fields, coords, steps, mode="physical")
    finally:
        handle.remove()
    return len(calls) / steps


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
    decodes = physical_decodes_per_step(module, fields, coords, sizes["steps"][0])
    summary = {
        "reference_steps": reference["steps"],
        "latent_speedup": reference["speedup_final"],
        "latent_all_decoded_speedup": reference["speedup_all"],
        "latent_speedup_vs_rollout_physical": reference["physical_s"] / reference["latent_final_s"],
        "physical_decodes_per_step": decodes,
    }
    notes = ["Under torch.no_grad. Speed-ups are against the physical rollout with one decode per step; "
             f"OperatorModule.rollout(mode='physical') decodes the grid {decodes:g} time(s) per step (counted), "
             "re-encoding the decoded output."]
    tables = []
    try:
        require_neuralop()
    except ConfigError:
        notes.append(f"FNO rows skipped: neuraloperator is not installed ({INSTALL_HINT})")
    else:
        extra = fno_rows(sizes, device)
        tables.append(SubTable("fno", f"Rollout time, FNO baseline (conf/model/fno.yaml) beside UPT latent "
                                      f"({sizes['preset']} model), batch {sizes['batch']}", FNO_COLUMNS, extra))
        largest = extra[-1]
        summary["fno_over_upt_latent_all"] = largest["fno_over_upt_latent_all"]
        notes.append(f"FNO table: each step of the FNO computes the whole grid; the summary's fno_over_upt_latent_all "
                     f"is at grid {largest['grid']}, {largest['steps']} steps.")
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
        notes=notes,
        tables=tables,
    )
