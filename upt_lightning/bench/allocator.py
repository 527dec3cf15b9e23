"""Benchmark ``allocator``: a full-grid decode with glibc's default malloc and with freed memory kept.

What validation and test do on every batch: decode a batch of 16 samples at every point of the 64x64
grid without gradients (the default experiment's decoder; quick: the tiny one). Each setting runs in a
fresh Python process, the default first, then with :func:`upt_lightning.runtime.allocator.keep_freed_memory`
(what ``train.py`` applies unless ``keep_freed_memory=false``); each reports the median seconds of a decode
and the minor page faults per decode (every page the kernel had to hand out anew). Faults are counted,
not timed, so their ratio holds on a busy machine; the seconds say what they cost.
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time

import torch

from upt_lightning.bench.options import BenchOptions
from upt_lightning.bench.report import BenchResult, Column

QUICK = {"preset": "tiny", "batch": 4, "points": 4096, "repeats": 3}
FULL = {"preset": "small", "batch": 16, "points": 4096, "repeats": 8}
COLUMNS = [Column("allocator", "malloc"), Column("time_s", "decode s"), Column("page_faults", "page faults/decode", "{:.0f}")]


def decode_cost(keep: bool, preset_name: str, batch: int, points: int, repeats: int) -> dict:
    """Median seconds and minor page faults of one no-grad decode (run in a fresh process by :func:`run`)."""
    from upt_lightning.runtime.allocator import keep_freed_memory

    applied = keep_freed_memory() if keep else False
    from upt_lightning.bench.decoder import build_decoder

    decoder, latent = build_decoder(preset_name, points, torch.device("cpu"))  # chunk = points: one piece
    latent = latent.expand(batch, -1, -1).contiguous()
    coords = torch.rand(batch, points, 2, generator=torch.Generator().manual_seed(0))
    times, faults = [], []
    with torch.no_grad():
        decoder(coords, latent)  # thread pools, kernels, and the first touch of the heap
        for _ in range(repeats):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            start = time.perf_counter()
            decoder(coords, latent)
            times.append(time.perf_counter() - start)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return {"time_s": statistics.median(times), "page_faults": statistics.median(faults), "applied": applied}


def _in_fresh_process(keep: bool, sizes: dict) -> dict:
    args = [keep, sizes["preset"], sizes["batch"], sizes["points"], sizes["repeats"]]
    code = ("import json, sys, torch; from upt_lightning.bench.allocator import decode_cost; "
            "torch.set_num_threads(int(sys.argv[2])); print(json.dumps(decode_cost(*json.loads(sys.argv[1]))))")
    done = subprocess.run([sys.executable, "-c", code, json.dumps(args), str(torch.get_num_threads())],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the allocator measurement (keep={keep}) failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(options: BenchOptions) -> BenchResult:
    sizes = options.pick(QUICK, FULL)
    notes = []
    if options.device.type != "cpu":
        notes.append("measured on the CPU: the setting concerns host memory (CUDA tensors have their own allocator)")
    default, kept = _in_fresh_process(False, sizes), _in_fresh_process(True, sizes)
    if not kept["applied"]:
        notes.append("this C library is not glibc: keep_freed_memory() changed nothing, both rows use the default")
    rows = [{"allocator": "glibc default", "time_s": default["time_s"], "page_faults": default["page_faults"]},
            {"allocator": "freed memory kept", "time_s": kept["time_s"], "page_faults": kept["page_faults"]}]
    summary = {
        "speedup": default["time_s"] / kept["time_s"],
        "page_faults_default": default["page_faults"],
        "page_faults_kept": kept["page_faults"],
    }
    return BenchResult(
        name="allocator",
        title=f"No-grad decode of {sizes['batch']} x {sizes['points']} points ({sizes['preset']} decoder), "
              "glibc malloc's default against freed memory kept",
        columns=COLUMNS, rows=rows, summary=summary, settings=sizes, notes=notes,
    )
