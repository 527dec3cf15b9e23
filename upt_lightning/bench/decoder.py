"""Benchmark ``decoder``: decoding 10^4 to 10^6 query points in chunks, under ``torch.no_grad``.

Two ways of chunking are measured: the decoder's own (``AnyPointDecoder(..., chunk_size)``),
and streaming, where the caller hands the decoder one chunk of points at a time and
concatenates the decoded fields. Both give the same values (queries are independent).
"""

from __future__ import annotations

import torch

from upt_lightning.bench.memory import track_peak_memory
from upt_lightning.bench.options import BenchOptions
from upt_lightning.bench.report import BenchResult, Column, Target
from upt_lightning.bench.timing import median_time
from upt_lightning.bench.workloads import FIELDS, load_model_preset
from upt_lightning.models import AnyPointDecoder

# chunk_size None keeps the preset's; the quick run lowers it so that every size is decoded in chunks.
QUICK = {"preset": "tiny", "points": (10**3, 10**4, 4 * 10**4), "chunk_size": 512, "repeats": 2}
FULL = {"preset": "small", "points": (10**4, 10**5, 10**6), "chunk_size": None, "repeats": 3}
METHODS = ("decoder chunks", "streamed chunks")
MB = 2**20

COLUMNS = [
    Column("method", "chunking"), Column("points", "points", "{:.0e}"), Column("time_s", "time s"),
    Column("points_per_s", "points/s", "{:.3g}"), Column("peak_rss_mb", "peak RSS MB", "{:.0f}"),
    Column("rss_increase_mb", "RSS +MB", "{:.1f}"), Column("device_peak_mb", "device peak MB"),
]


def _streamed(decoder: AnyPointDecoder, points: torch.Tensor, latent: torch.Tensor, chunk: int) -> dict:
    parts = [decoder(part, latent) for part in points.split(chunk, dim=1)]
    return {name: torch.cat([part[name] for part in parts], dim=1) for name in parts[0]}


def run(options: BenchOptions) -> BenchResult:
    sizes = options.pick(QUICK, FULL)
    device = options.device
    preset = load_model_preset(sizes["preset"])
    torch.manual_seed(0)
    settings = {**preset["decoder"], **({} if sizes["chunk_size"] is None else {"chunk_size": sizes["chunk_size"]})}
    decoder = AnyPointDecoder(FIELDS, coord_dim=2, latent_dim=preset["latent_dim"], **settings)
    decoder = decoder.to(device).eval()
    chunk = decoder.chunk_size
    latent = torch.randn(1, preset["latent_tokens"], preset["latent_dim"], device=device)
    decode = {
        "decoder chunks": lambda points: decoder(points, latent),
        "streamed chunks": lambda points: _streamed(decoder, points, latent, chunk),
    }
    rows = []
    with torch.no_grad():
        for count in sizes["points"]:
            points = torch.rand(1, count, 2, generator=torch.Generator().manual_seed(count)).to(device)
            for method in METHODS:
                timing = median_time(lambda: decode[method](points), sizes["repeats"], device=device)
                with track_peak_memory(device) as peak:
                    decode[method](points)
                rows.append({
                    "method": method, "points": count, "time_s": timing.median_s,
                    "points_per_s": count / timing.median_s, "peak_rss_mb": peak.peak_rss_bytes / MB,
                    "rss_increase_mb": peak.rss_increase_bytes / MB,
                    "device_peak_mb": None if peak.device_peak_bytes is None else peak.device_peak_bytes / MB,
                })
    big, mid = sizes["points"][-1], sizes["points"][-2]

    def memory(method: str, count: int) -> float:
        row = next(r for r in rows if r["method"] == method and r["points"] == count)
        key = "rss_increase_mb" if device.type == "cpu" else "device_peak_mb"
        return max(row[key], 1.0 / MB)  # one byte at least, so a ratio always exists

    summary = {
        "memory_ratio_decoder_chunks": memory("decoder chunks", big) / memory("decoder chunks", mid),
        "memory_ratio_streamed": memory("streamed chunks", big) / memory("streamed chunks", mid),
        "points_per_s_largest": next(r for r in rows if r["points"] == big)["points_per_s"],
    }
    return BenchResult(
        name="decoder",
        title=f"Decoding many points ({sizes['preset']} decoder, chunk_size {chunk}, batch 1, no_grad)",
        columns=COLUMNS,
        rows=rows,
        summary=summary,
        targets=[Target(f"peak memory {big:.0e} / {mid:.0e} points (decoder chunks)",
                        summary["memory_ratio_decoder_chunks"], 1.5, at_most=True)],
        settings={**sizes, "chunk_size": chunk},
        notes=["Memory is the rise of RSS (CPU) or of allocated device memory during one decode, outputs "
               "included, the query points excluded."],
    )
