"""Benchmark ``mesh``: MeshEncoder on 10^3 to 2x10^5 scattered points with 256 to 2048 supernodes.

Per (points, supernodes): the neighbour search alone (supernode choice plus the chunked
``cdist``/``topk`` radius search) and the whole encoder forward (search, message pooling,
transformer, perceiver), each timed and with its peak memory, under ``torch.no_grad`` in eval
mode; and the bytes a forward with gradients saves for backward (stage-1 training).
"""

from __future__ import annotations

import torch

from upt_lightning.bench.memory import track_peak_memory
from upt_lightning.bench.options import BenchOptions
from upt_lightning.bench.presets import FIELDS, load_model_preset
from upt_lightning.bench.report import BenchResult, Column
from upt_lightning.bench.timing import median_time
from upt_lightning.bench.workloads import smooth_fields
from upt_lightning.models import MeshEncoder, saved_tensor_bytes

QUICK = {"preset": "tiny", "points": (1000, 4000), "supernodes": (64, 256), "repeats": 1}
FULL = {"preset": "small", "points": (1000, 10_000, 100_000, 200_000), "supernodes": (256, 1024, 2048),
        "repeats": 3}
MB = 2**20

COLUMNS = [
    Column("points", "points", "{:.0e}"), Column("supernodes", "supernodes", "{:d}"),
    Column("neighbours_s", "search s"), Column("encode_s", "encode s"),
    Column("neighbours_rss_mb", "search RSS +MB", "{:.1f}"), Column("encode_rss_mb", "encode RSS +MB", "{:.1f}"),
    Column("encode_device_mb", "encode device MB"), Column("saved_mb", "saved for backward MB", "{:.1f}"),
]


def _measure(options: BenchOptions, preset: dict, count: int, supernodes: int, repeats: int) -> dict:
    device = options.device
    torch.manual_seed(0)
    settings = {**preset["mesh_encoder"], "num_supernodes": supernodes}
    encoder = MeshEncoder(FIELDS, coord_dim=2, latent_tokens=preset["latent_tokens"],
                          latent_dim=preset["latent_dim"], **settings).to(device).eval()
    coords = torch.rand(1, count, 2, generator=torch.Generator().manual_seed(count)).to(device)
    fields = smooth_fields(1, coords[0].cpu(), len(FIELDS)).to(device)

    def search():
        return encoder.neighbours(coords, encoder.select_supernodes(coords))

    def encode():
        return encoder(fields, coords)

    row = {"points": count, "supernodes": supernodes}
    with torch.no_grad():
        for name, fn in (("neighbours", search), ("encode", encode)):
            row[f"{name}_s"] = median_time(fn, repeats, device=device).median_s
            with track_peak_memory(device) as peak:
                fn()
            row[f"{name}_rss_mb"] = peak.rss_increase_bytes / MB
            if name == "encode":
                row["encode_device_mb"] = None if peak.device_peak_bytes is None else peak.device_peak_bytes / MB
    trainable = encoder.train()
    # Run backward too: a counted graph that is never run backward leaks (see queries._backward).
    row["saved_mb"] = saved_tensor_bytes(lambda: trainable(fields, coords).sum().backward()) / MB
    return row


def run(options: BenchOptions) -> BenchResult:
    sizes = options.pick(QUICK, FULL)
    preset = load_model_preset(sizes["preset"])
    rows = [
        _measure(options, preset, count, supernodes, sizes["repeats"])
        for count in sizes["points"] for supernodes in sizes["supernodes"] if supernodes <= count
    ]
    largest = rows[-1]
    summary = {
        "search_share_largest": largest["neighbours_s"] / largest["encode_s"],
        "points_per_s_largest": largest["points"] / largest["encode_s"],
    }
    mesh = preset["mesh_encoder"]
    return BenchResult(
        name="mesh",
        title=f"MeshEncoder scale ({sizes['preset']} preset: radius {mesh['radius']}, "
              f"max_neighbours {mesh['max_neighbours']}, chunk_size {mesh.get('chunk_size', 1024)}; batch 1)",
        columns=COLUMNS,
        rows=rows,
        summary=summary,
        settings={**sizes, "mesh_encoder": mesh},
        notes=["search = select_supernodes + neighbours; encode = the whole forward (search included); "
               "RSS +MB = rise of resident memory during one call (no_grad, eval mode).",
               "The search holds a (batch, chunk_size, points) distance matrix at a time: memory grows with "
               "the batch size times the point count."],
    )
