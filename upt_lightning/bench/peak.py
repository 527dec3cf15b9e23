"""Benchmark ``peak``: a large fp32 matmul's FLOP/s and the training step's share of it (on CUDA also
in bf16: the bf16 matmul rate and the step under bf16 autocast).

The step's FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (matmuls and
attention, forward and backward; element-wise work is not counted, as in the usual
model-FLOPs-utilisation figure) and divided by the step's median time, both measured in this
process with the same thread count as the matmul.
"""

from __future__ import annotations

import warnings

import torch
from torch.utils.flop_counter import FlopCounterMode

from upt_lightning.bench.options import BenchOptions
from upt_lightning.bench.presets import load_model_preset
from upt_lightning.bench.report import BenchResult, Column
from upt_lightning.bench.timing import median_time
from upt_lightning.bench.workloads import grid_batch, grid_operator_module

QUICK = {"matmul_size": 512, "preset": "tiny", "grid": (32, 32), "batch": 2, "num_queries": 512, "repeats": 2}
FULL = {"matmul_size": 2048, "preset": "small", "grid": (64, 64), "batch": 16, "num_queries": 2048, "repeats": 7}
MODELS = ("GridEncoder", "AnyPointDecoder", "LatentOperator")

COLUMNS = [
    Column("workload", "workload"), Column("gflop", "GFLOP"), Column("time_s", "time s"),
    Column("gflop_per_s", "GFLOP/s"), Column("fraction_of_matmul", "of matmul", "{:.1%}"),
]


def _step(module, optimizer, batch) -> None:
    module.training_step(batch, 0).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _bf16_rows(module, optimizer, batch, a, b, matmul_gflop, step_gflop, repeats, device) -> list[dict]:
    """On CUDA: the bf16 matmul rate, and the training step under bf16 autocast (trainer=gpu's bf16-mixed) as a
    fraction of it; the step's FLOP count is the fp32 one (autocast changes the precision, not the work)."""
    a16, b16 = a.to(torch.bfloat16), b.to(torch.bfloat16)
    matmul = median_time(lambda: a16 @ b16, repeats, warmup=2, device=device)
    peak = matmul_gflop / matmul.median_s

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = module.training_step(batch, 0)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*self.log.*")
        timing = median_time(step, repeats, device=device)
    return [
        {"workload": f"matmul {a.shape[0]}x{a.shape[0]} bf16", "gflop": matmul_gflop, "time_s": matmul.median_s,
         "gflop_per_s": peak, "fraction_of_matmul": 1.0},
        {"workload": "operator training step, bf16 autocast", "gflop": step_gflop, "time_s": timing.median_s,
         "gflop_per_s": step_gflop / timing.median_s, "fraction_of_matmul": step_gflop / timing.median_s / peak},
    ]


def run(options: BenchOptions) -> BenchResult:
    sizes = options.pick(QUICK, FULL)
    device, n = options.device, sizes["matmul_size"]
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=gen).to(device) for _ in range(2))
    matmul = median_time(lambda: a @ b, sizes["repeats"], warmup=2, device=device)
    matmul_gflop = 2 * n**3 / 1e9

    torch.manual_seed(0)
    module = grid_operator_module(load_model_preset(sizes["preset"]), sizes["grid"], sizes["num_queries"],
                                  device=device).train()
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-4)
    batch = grid_batch(sizes["batch"], sizes["grid"], device=device)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*self.log.*")
        step = median_time(lambda: _step(module, optimizer, batch), sizes["repeats"], device=device)
        with FlopCounterMode(display=False) as counter:
            module.training_step(batch, 0).backward()
    counts = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    step_gflop = counter.get_total_flops() / 1e9

    peak = matmul_gflop / matmul.median_s
    rows = [
        {"workload": f"matmul {n}x{n} fp32", "gflop": matmul_gflop, "time_s": matmul.median_s,
         "gflop_per_s": peak, "fraction_of_matmul": 1.0},
        {"workload": "operator training step", "gflop": step_gflop, "time_s": step.median_s,
         "gflop_per_s": step_gflop / step.median_s, "fraction_of_matmul": step_gflop / step.median_s / peak},
    ]
    if device.type == "cuda":
        rows += _bf16_rows(module, optimizer, batch, a, b, matmul_gflop, step_gflop, sizes["repeats"], device)
    summary = {
        "matmul_gflop_per_s": peak,
        "step_gflop_per_s": rows[1]["gflop_per_s"],
        "step_fraction_of_matmul": rows[1]["fraction_of_matmul"],
        **{f"flop_share_{name}": counts.get(name, 0) / counter.get_total_flops() for name in MODELS},
    }
    if device.type == "cuda":
        summary["bf16_matmul_gflop_per_s"] = rows[2]["gflop_per_s"]
        summary["step_fraction_of_bf16_matmul"] = rows[3]["fraction_of_matmul"]
    return BenchResult(
        name="peak",
        title=f"Achieved FLOP/s ({sizes['preset']} model, grid {sizes['grid']}, batch {sizes['batch']}, "
              f"Q={sizes['num_queries']} uniform, {torch.get_num_threads()} threads)",
        columns=COLUMNS,
        rows=rows,
        summary=summary,
        settings={**sizes, "threads": torch.get_num_threads()},
        notes=["Step FLOPs: matmuls and attention of forward and backward (FlopCounterMode); the step time "
               "includes the AdamW update and all element-wise work."],
    )
