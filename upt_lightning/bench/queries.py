"""Benchmark ``queries``: an operator-stage training step with inverse losses at Q sampled points.

For Q = all points (dense), N/2, N/4, N/8 with uniform and stratified sampling it measures the
full step (forward, backward, AdamW), each inverse loss on its own (forward and backward at the
operator's prediction), the bytes autograd saves for backward and the peak memory of a step.
The timed calls of all configurations run in interleaved rounds (``interleaved_times``).
One more row repeats uniform Q = N/2 with ``sampled_inverse_gradient=False``: L_inv_dec then
backpropagates through every grid point, as before the sampled gradient (and without the decode
the two inverse losses share), for a comparison within one run.
"""

from __future__ import annotations

import math
import warnings

import torch

from upt_lightning.bench.memory import track_peak_memory
from upt_lightning.bench.options import BenchOptions
from upt_lightning.bench.presets import load_model_preset
from upt_lightning.bench.report import BenchResult, Column, Target
from upt_lightning.bench.timing import interleaved_times
from upt_lightning.bench.workloads import grid_batch, grid_operator_module
from upt_lightning.fields import split_fields
from upt_lightning.losses import inverse_decoding_loss, inverse_encoding_loss
from upt_lightning.models import saved_tensor_bytes

QUICK = {"preset": "tiny", "grid": (32, 32), "batch": 2, "repeats": 2}
FULL = {"preset": "small", "grid": (64, 64), "batch": 16, "repeats": 7}
FRACTIONS = (2, 4, 8)
EXACT = "uniform, exact L_inv_dec"
MB = 2**20

COLUMNS = [
    Column("strategy", "sampling"), Column("num_queries", "Q", "{:d}"),
    Column("step_s", "step s"), Column("inv_enc_s", "L_inv_enc s"), Column("inv_dec_s", "L_inv_dec s"),
    Column("step_saved_mb", "step saved MB"), Column("decoder_saved_mb", "L_inv_enc saved MB"),
    Column("inv_dec_saved_mb", "L_inv_dec saved MB"), Column("peak_rss_mb", "peak RSS MB", "{:.0f}"),
    Column("rss_increase_mb", "RSS +MB", "{:.0f}"), Column("device_peak_mb", "device peak MB"),
]


def _train_step(module, optimizer, batch) -> None:
    loss = module.training_step(batch, 0)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _backward(loss_fn) -> None:
    """Forward and backward. Counting saved bytes on a graph that is never run backward would leak it: the
    counting pack hook keeps outputs together with their grad_fn, a cycle through C++ no gc can break."""
    loss_fn().backward()


def _prepare(options: BenchOptions, sizes: dict, preset: dict, strategy: str, num_queries: int | None,
             sampled_gradient: bool = True) -> tuple[dict, dict]:
    """One configuration: its row without times (memory is measured here) and the calls to time."""
    device, grid = options.device, sizes["grid"]
    torch.manual_seed(0)  # the same weights for every configuration
    module = grid_operator_module(preset, grid, num_queries, strategy, device, sampled_gradient).train()
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-4)
    batch = grid_batch(sizes["batch"], grid, device=device)
    _train_step(module, optimizer, batch)  # warm-up: lazy initialisation and optimiser state
    with track_peak_memory(device) as peak:
        _train_step(module, optimizer, batch)
    # Each counted graph is run backward: that frees it (see _backward).
    step_saved = saved_tensor_bytes(lambda: _backward(lambda: module.training_step(batch, 0)))
    optimizer.zero_grad(set_to_none=True)

    prepared = module.prepare_batch(batch)
    with torch.no_grad():
        prediction = module.step(module.encode(prepared.fields, prepared.coords, prepared.meta), prepared.dt)
    latent = prediction.requires_grad_(True)
    sampling = dict(num_queries=num_queries, query_strategy=strategy, grid_shape=grid, per_sample=True)
    target = split_fields(prepared.targets[:, 0], module.field_spec)

    def inv_enc():
        return inverse_encoding_loss(target, latent, module.decoder, prepared.coords, 1.0,
                                     generator=module.query_generator(), **sampling)

    def inv_dec():
        return inverse_decoding_loss(latent, module.decoder, module.encoder, prepared.coords, prepared.coords,
                                     prepared.meta, 1.0, generator=module.query_generator(),
                                     sampled_gradient=sampled_gradient, **sampling)

    points = prepared.coords.shape[1]
    row = {
        "strategy": "dense" if num_queries is None else strategy if sampled_gradient else EXACT,
        "num_queries": points if num_queries is None else num_queries,
        "step_saved_mb": step_saved / MB,
        "decoder_saved_mb": saved_tensor_bytes(lambda: _backward(inv_enc)) / MB,
        "inv_dec_saved_mb": saved_tensor_bytes(lambda: _backward(inv_dec)) / MB,
        "peak_rss_mb": peak.peak_rss_bytes / MB,
        "rss_increase_mb": peak.rss_increase_bytes / MB,
        "device_peak_mb": None if peak.device_peak_bytes is None else peak.device_peak_bytes / MB,
    }
    calls = {"step_s": lambda: _train_step(module, optimizer, batch),
             "inv_enc_s": lambda: _backward(inv_enc), "inv_dec_s": lambda: _backward(inv_dec)}
    return row, calls


def run(options: BenchOptions) -> BenchResult:
    sizes = options.pick(QUICK, FULL)
    preset = load_model_preset(sizes["preset"])
    points = math.prod(sizes["grid"])
    configs = [("uniform", None, True)] + [(s, points // f, True) for s in ("uniform", "stratified")
                                           for f in FRACTIONS] + [("uniform", points // 2, False)]
    with warnings.catch_warnings():
        # training_step logs through self.log, which warns once when no Trainer is attached.
        warnings.filterwarnings("ignore", message=".*self.log.*")
        cases = [_prepare(options, sizes, preset, strategy, q, sampled) for strategy, q, sampled in configs]
        calls = {(index, key): call for index, (_, timed) in enumerate(cases) for key, call in timed.items()}
        times = interleaved_times(calls, sizes["repeats"], device=options.device)
    rows = [{**row, **{key: times[index, key].median_s for key in timed}} for index, (row, timed) in enumerate(cases)]
    dense, exact = rows[0], rows[-1]
    half = next(row for row in rows if row["strategy"] == "uniform" and row["num_queries"] == points // 2)
    summary = {
        "decoder_saved_ratio_half": half["decoder_saved_mb"] / dense["decoder_saved_mb"],
        "step_saved_ratio_half": half["step_saved_mb"] / dense["step_saved_mb"],
        "step_speedup_half": dense["step_s"] / half["step_s"],
        "inv_enc_speedup_half": dense["inv_enc_s"] / half["inv_enc_s"],
        "inv_dec_speedup_half": dense["inv_dec_s"] / half["inv_dec_s"],
        "inverse_share_of_dense_step": (dense["inv_enc_s"] + dense["inv_dec_s"]) / dense["step_s"],
        "step_speedup_half_vs_exact_inv_dec": exact["step_s"] / half["step_s"],
        "step_saved_ratio_half_vs_exact_inv_dec": half["step_saved_mb"] / exact["step_saved_mb"],
    }
    q = points // 2
    return BenchResult(
        name="queries",
        title=f"Operator training step vs query count ({sizes['preset']} model, grid {sizes['grid']}, "
              f"batch {sizes['batch']})",
        columns=COLUMNS,
        rows=rows,
        summary=summary,
        targets=[
            Target(f"decoder saved bytes Q={q} / dense", summary["decoder_saved_ratio_half"], 0.52, at_most=True),
            Target(f"step speed-up Q={q} vs dense", summary["step_speedup_half"], 1.3, at_most=False),
        ],
        settings={**sizes, "queries": [row["num_queries"] for row in rows]},
        notes=[
            "step = training_step + backward + AdamW step (median); L_inv_* = that loss alone, forward + "
            "backward at the operator's prediction; saved = bytes autograd keeps for backward.",
            "L_inv_dec re-encodes the full grid (GridEncoder cannot read a point subset); with sampling it decodes "
            "the grid without gradients and backpropagates through the Q sampled points, which the step shares "
            f"with L_inv_enc. Row '{EXACT}': sampled_inverse_gradient=False, the full-grid backward.",
        ],
    )
