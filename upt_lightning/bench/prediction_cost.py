"""Benchmark ``prediction_cost``: seconds per predicted frame of UPT, the FNO and the solver that made the data.

A batch of test-sized trajectories (the default experiment's 26 test trajectories, 2D Burgers, 64x64 input)
is predicted ``steps`` frames ahead and decoded on a grid of 64, 128 or 256 points per side:

* UPT latent rollout with inference refinement (the default experiment: refine the start, carry the
  correction), every step decoded; the same without refinement; refinement on, only the last step decoded;
* UPT physical rollout (decode and re-encode the 64x64 grid every step, then decode the output grid);
* the FNO baseline (``conf/model/fno.yaml``), which interpolates the start onto the output grid and steps there;
* the project's own solver (pseudo-spectral, ETDRK4, float64, Courant-limited internal steps) from the same
  start, at the 64x64 resolution the data were generated at; its spectral solution is evaluated on the
  output grid, as the finer copies for super-resolution are made.

Timings do not depend on the weights (random here; inference refinement takes its fixed number of steps).
The start frames are random smooth initial conditions of the data set (amplitude 0.5): the solver's
internal step shrinks with the flow's speed, and the first frame is the fastest of a decaying flow, so its
figure is an upper bound for later starts. The surrogate pays off where its seconds per frame are below
the solver's.
"""

from __future__ import annotations

import torch

from upt_lightning.baselines import require_neuralop
from upt_lightning.baselines.neuralop_import import INSTALL_HINT
from upt_lightning.bench.options import BenchOptions
from upt_lightning.bench.presets import load_model_preset
from upt_lightning.bench.report import BenchResult, Column
from upt_lightning.bench.timing import interleaved_times
from upt_lightning.bench.workloads import grid_coords, grid_fno_module, grid_operator_module
from upt_lightning.data.recipes import DATASETS
from upt_lightning.data.solvers.burgers2d import initial_fields_2d, random_initial_modes_2d, solve_burgers2d
from upt_lightning.data.solvers.spectral import dealias_cutoff, evaluate_series_on_grid, series_coefficients_2d
from upt_lightning.errors import ConfigError

QUICK = {"preset": "tiny", "input_grid": 16, "batch": 2, "steps": 3, "output_grids": (16, 32), "repeats": 1}
FULL = {"preset": "small", "input_grid": 64, "batch": 26, "steps": 10, "output_grids": (64, 128, 256), "repeats": 1}
# What burgers_upt predicts with (conf/experiment/burgers_upt.yaml, stage2.inference_refinement).
REFINEMENT = {"steps": 20, "lr": 0.15, "points": 128, "rate": "residual", "carry": 0.7}
METHODS = {
    "upt_refined_all": "UPT latent, refined, every step decoded",
    "upt_plain_all": "UPT latent, no refinement, every step decoded",
    "upt_refined_last": "UPT latent, refined, last step decoded",
    "upt_physical": "UPT physical (re-encode every step)",
    "fno": "FNO",
    "solver": "solver (float64 spectral, on the input grid)",
}
COLUMNS = [Column("grid", "output grid"), Column("method", "method"),
           Column("total_s", "s for the batch"), Column("ms_per_frame", "ms per predicted frame", "{:.2f}"),
           Column("over_solver", "/ solver", "{:.2f}")]


def burgers_starts(batch: int, grid: int) -> torch.Tensor:
    """Random start fields of the burgers2d data set, ``(batch, 2, grid, grid)`` float64."""
    defaults = DATASETS["burgers2d"].defaults
    modes = random_initial_modes_2d(batch, generator=torch.Generator().manual_seed(0),
                                    max_wavenumber=defaults["max_wavenumber"])
    return initial_fields_2d(modes, grid, defaults["amplitude"])


def solver_frames(u0: torch.Tensor, steps: int, output_grid: int) -> torch.Tensor:
    """The solver's ``steps`` next frames of ``u0`` (B, 2, N, N) on an output grid: (B, steps, 2, G, G),
    evaluated there as the data generator does (the exact truncated series on a finer grid)."""
    defaults, n = DATASETS["burgers2d"].defaults, u0.shape[-1]
    # The generator's bound on the speed (max|u| + max|v| <= 2 amplitude), hence its internal time step.
    spectra = solve_burgers2d(u0, defaults["nu"], dt_out=defaults["dt_out"], num_steps=steps + 1,
                              cfl=defaults["cfl"], max_speed=2 * defaults["amplitude"])[:, 1:]
    if output_grid == n:
        return torch.fft.irfft2(spectra, s=(n, n))
    series = series_coefficients_2d(spectra.flatten(0, 1), dealias_cutoff(n))
    return evaluate_series_on_grid(series, output_grid, output_grid).unflatten(0, spectra.shape[:2])


def _methods(sizes: dict, device: torch.device, output_grid: int) -> dict:
    """{method: callable predicting ``steps`` frames of the batch on the output grid}."""
    grid = (sizes["input_grid"],) * 2
    u0 = burgers_starts(sizes["batch"], sizes["input_grid"])
    fields = u0.flatten(2).transpose(1, 2).float().contiguous().to(device)  # (B, N, 2), row-major
    coords = grid_coords(grid).expand(sizes["batch"], -1, -1).contiguous().to(device)
    queries = grid_coords((output_grid,) * 2).expand(sizes["batch"], -1, -1).contiguous().to(device)
    torch.manual_seed(0)
    refined = grid_operator_module(load_model_preset(sizes["preset"]), grid, device=device).eval()
    refined.hparams["inference_refinement"] = REFINEMENT
    plain = grid_operator_module(load_model_preset(sizes["preset"]), grid, device=device).eval()
    steps = sizes["steps"]
    methods = {
        "upt_refined_all": lambda: refined.rollout(fields, coords, steps, query_points=queries),
        "upt_plain_all": lambda: plain.rollout(fields, coords, steps, query_points=queries),
        "upt_refined_last": lambda: refined.rollout(fields, coords, steps, query_points=queries,
                                                    decode_steps=[steps]),
        "upt_physical": lambda: plain.rollout(fields, coords, steps, query_points=queries, mode="physical"),
        "solver": lambda: solver_frames(u0, steps, output_grid),
    }
    try:
        require_neuralop()
    except ConfigError:
        return methods
    fno = grid_fno_module(load_model_preset("fno"), grid, device=device).eval()
    methods["fno"] = lambda: fno.rollout(fields, coords, steps, query_points=queries)
    return methods


@torch.no_grad()
def run(options: BenchOptions) -> BenchResult:
    sizes = options.pick(QUICK, FULL)
    notes = [f"start frames: {sizes['batch']} random initial conditions of burgers2d on "
             f"{sizes['input_grid']}x{sizes['input_grid']}, {sizes['steps']} steps; the solver ran on the CPU "
             "in float64, the models on " + str(options.device)]
    rows = []
    for output_grid in sizes["output_grids"]:
        methods = _methods(sizes, options.device, output_grid)
        times = interleaved_times(methods, sizes["repeats"], device=options.device)
        frames = sizes["batch"] * sizes["steps"]
        solver_s = times["solver"].min_s
        for key in METHODS:
            if key in times:
                total = times[key].min_s
                rows.append({"grid": f"{output_grid}x{output_grid}", "method": METHODS[key], "key": key,
                             "total_s": total, "ms_per_frame": 1e3 * total / frames, "over_solver": total / solver_s})
    if not any(row["key"] == "fno" for row in rows):
        notes.append(f"FNO rows skipped: {INSTALL_HINT}")
    by = {(row["grid"], row["key"]): row["total_s"] for row in rows}
    first = f"{sizes['output_grids'][0]}x{sizes['output_grids'][0]}"
    summary = {f"{key}_over_solver_{first}": by[(first, key)] / by[(first, "solver")]
               for key in METHODS if (first, key) in by and key != "solver"}
    return BenchResult(
        name="prediction_cost",
        title=f"Seconds per predicted frame (after a warm-up call, best of {sizes['repeats']}): "
              f"{sizes['batch']} trajectories, {sizes['steps']} steps, against the solver",
        columns=COLUMNS, rows=rows, summary=summary, settings={**sizes, "refinement": REFINEMENT}, notes=notes,
    )
