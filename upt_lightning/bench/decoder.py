"""Benchmark ``decoder``: decoding 10^4 to 10^6 query points in chunks, under ``torch.no_grad``.

Two ways of chunking are measured: the decoder's own (``AnyPointDecoder(..., chunk_size)``),
and streaming, where the caller hands the decoder one chunk of points at a time and
concatenates the decoded fields. Both give the same values (queries are independent).

The memory of one decode is measured in a fresh Python process per (method, points), with
glibc's mmap threshold fixed at 128 KiB (``MALLOC_MMAP_THRESHOLD_``): every tensor buffer of that
size or more then goes back to the OS when freed, so the RSS peak follows the live tensors, as a
GPU allocator's peak does. With glibc's default (a threshold that rises after the first large
free) chunk temporaries come from the heap, and the small outputs kept between chunks fragment it:
the RSS rise then says more about the allocator's history than about the decoder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

from upt_lightning.bench.memory import track_peak_memory
from upt_lightning.bench.options import BenchOptions
from upt_lightning.bench.presets import FIELDS, load_model_preset
from upt_lightning.bench.report import BenchResult, Column, Target
from upt_lightning.bench.timing import median_time
from upt_lightning.models import AnyPointDecoder

# chunk_size None keeps the preset's; the quick run lowers it so that every size is decoded in chunks.
QUICK = {"preset": "tiny", "points": (10**4, 4 * 10**4), "chunk_size": 512, "repeats": 2}
FULL = {"preset": "small", "points": (10**4, 10**5, 10**6), "chunk_size": None, "repeats": 3}
METHODS = ("decoder chunks", "streamed chunks")
MB = 2**20

COLUMNS = [
    Column("method", "chunking"), Column("points", "points", "{:.0e}"), Column("time_s", "time s"),
    Column("points_per_s", "points/s", "{:.3g}"), Column("peak_rss_mb", "peak RSS MB", "{:.0f}"),
    Column("rss_increase_mb", "RSS +MB", "{:.1f}"), Column("device_peak_mb", "device peak MB"),
]


def build_decoder(preset_name: str, chunk_size: int | None, device: torch.device):
    """The preset's decoder in eval mode (seeded weights) and a latent ``(1, T, D)``."""
    preset = load_model_preset(preset_name)
    settings = {**preset["decoder"], **({} if chunk_size is None else {"chunk_size": chunk_size})}
    torch.manual_seed(0)
    decoder = AnyPointDecoder(FIELDS, coord_dim=2, latent_dim=preset["latent_dim"], **settings).to(device).eval()
    return decoder, torch.randn(1, preset["latent_tokens"], preset["latent_dim"], device=device)


def query_points(count: int, device: torch.device) -> torch.Tensor:
    return torch.rand(1, count, 2, generator=torch.Generator().manual_seed(count)).to(device)


@torch.no_grad()
def decode(method: str, decoder: AnyPointDecoder, points: torch.Tensor, latent: torch.Tensor) -> dict:
    if method == "decoder chunks":
        return decoder(points, latent)
    parts = [decoder(part, latent) for part in points.split(decoder.chunk_size, dim=1)]
    return {name: torch.cat([part[name] for part in parts], dim=1) for name in parts[0]}


def peak_of_one_decode(method: str, count: int, preset_name: str, chunk_size: int | None, device: str) -> dict:
    """Peak memory of one decode (run in a fresh process by ``_measure_in_fresh_process``), in MB."""
    device = torch.device(device)
    decoder, latent = build_decoder(preset_name, chunk_size, device)
    points = query_points(count, device)
    # A first, tiny decode does the process's one-time set-up (thread pools, kernels), which is not the call's.
    decode(method, decoder, points[:, :16], latent)
    with track_peak_memory(device) as peak:
        decode(method, decoder, points, latent)
    return {"peak_rss_mb": peak.peak_rss_bytes / MB, "rss_increase_mb": peak.rss_increase_bytes / MB,
            "device_peak_mb": None if peak.device_peak_bytes is None else peak.device_peak_bytes / MB}


def _measure_in_fresh_process(*args) -> dict:
    code = ("import json, sys, torch; from upt_lightning.bench.decoder import peak_of_one_decode; "
            "torch.set_num_threads(int(sys.argv[2])); print(json.dumps(peak_of_one_decode(*json.loads(sys.argv[1]))))")
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
    done = subprocess.run([sys.executable, "-c", code, json.dumps(args), str(torch.get_num_threads())],
                          capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"the memory measurement of decoding {args[:2]} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(options: BenchOptions) -> BenchResult:
    sizes = options.pick(QUICK, FULL)
    device = options.device
    decoder, latent = build_decoder(sizes["preset"], sizes["chunk_size"], device)
    rows = []
    for count in sizes["points"]:
        points = query_points(count, device)
        for method in METHODS:
            timing = median_time(lambda: decode(method, decoder, points, latent), sizes["repeats"], device=device)
            memory = _measure_in_fresh_process(method, count, sizes["preset"], sizes["chunk_size"], str(device))
            rows.append({"method": method, "points": count, "time_s": timing.median_s,
                         "points_per_s": count / timing.median_s, **memory})
    big, mid = sizes["points"][-1], sizes["points"][-2]

    def memory_of(method: str, count: int) -> float:
        row = next(r for r in rows if r["method"] == method and r["points"] == count)
        key = "rss_increase_mb" if device.type == "cpu" else "device_peak_mb"
        return max(row[key], 1.0 / MB)  # one byte at least, so a ratio always exists

    summary = {
        "memory_ratio_decoder_chunks": memory_of("decoder chunks", big) / memory_of("decoder chunks", mid),
        "memory_ratio_streamed": memory_of("streamed chunks", big) / memory_of("streamed chunks", mid),
        "points_per_s_largest": next(r for r in rows if r["points"] == big)["points_per_s"],
    }
    return BenchResult(
        name="decoder",
        title=f"Decoding many points ({sizes['preset']} decoder, chunk_size {decoder.chunk_size}, batch 1, no_grad)",
        columns=COLUMNS,
        rows=rows,
        summary=summary,
        targets=[Target(f"peak memory {big:.0e} / {mid:.0e} points (decoder chunks)",
                        summary["memory_ratio_decoder_chunks"], 1.5, at_most=True)],
        settings={**sizes, "chunk_size": decoder.chunk_size},
        notes=["Memory: rise of RSS (CPU; fresh process, glibc mmap threshold fixed at 128 KiB) or of allocated "
               "device memory during one decode, outputs included, the query points excluded."],
    )
