"""Benchmark ``mesh``: MeshEncoder on 10^3 to 2x10^5 scattered points with 256 to 2048 supernodes.

Per (points, supernodes, batch): the neighbour search alone (supernode choice plus the chunked
``cdist``/``topk`` radius search) and the whole encoder forward (search, message pooling,
transformer, perceiver), each timed and with its peak memory, under ``torch.no_grad`` in eval
mode; and the bytes a forward with gradients saves for backward (stage-1 training). The search
chunk follows the encoder's memory budget (``search_budget_mib``); the search is measured again
with the former fixed chunk of 1024 centres (``chunk_size=1024``) for comparison. Batch 1 for
every size, plus a few batched rows.
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

QUICK = {"preset": "tiny", "points": (1000, 4000), "supernodes": (64, 256), "batched": ((4000, 256, 2),),
         "repeats": 1}
FULL = {"preset": "small", "points": (1000, 10_000, 100_000, 200_000), "supernodes": (256, 1024, 2048),
        "batched": ((100_000, 1024, 4),), "repeats": 3}
MB = 2**20
FIXED_CHUNK = 1024  # the search's chunk of centres before it followed a memory budget

COLUMNS = [
    Column("points", "points", "{:.0e}"), Column("supernodes", "supernodes", "{:d}"), Column("batch", "batch", "{:d}"),
    Column("neighbours_s", "search s"), Column("encode_s", "encode s"),
    Column("neighbours_rss_mb", "search RSS +MB", "{:.1f}"), Column("encode_rss_mb", "encode RSS +MB", "{:.1f}"),
    Column("fixed_chunk_s", f"search s, chunk {FIXED_CHUNK}"),
    Column("fixed_chunk_rss_mb", f"search RSS +MB, chunk {FIXED_CHUNK}", "{:.1f}"),
    Column("encode_device_mb", "encode device MB"), Column("saved_mb", "saved for backward MB", "{:.1f}"),
]


def _measure(options: BenchOptions, preset: dict, count: int, supernodes: int, batch: int, repeats: int) -> dict:
    device = options.device
    torch.manual_seed(0)
    settings = {**preset["mesh_encoder"], "num_supernodes": supernodes}

    def build(**extra):
        return MeshEncoder(FIELDS, coord_dim=2, latent_tokens=preset["latent_tokens"],
                           latent_dim=preset["latent_dim"], **{**settings, **extra}).to(device).eval()

    encoder, fixed = build(), build(chunk_size=FIXED_CHUNK)
    coords = torch.rand(batch, count, 2, generator=torch.Generator().manual_seed(count)).to(device)
    fields = torch.cat([smooth_fields(1, points.cpu(), len(FIELDS)) for points in coords]).to(device)

    def search():
        return encoder.neighbours(coords, encoder.select_supernodes(coords))

    def fixed_chunk():
        return fixed.neighbours(coords, fixed.select_supernodes(coords))

    def encode():
        return encoder(fields, coords)

    row = {"points": count, "supernodes": supernodes, "batch": batch}
    with torch.no_grad():
        for name, fn in (("neighbours", search), ("encode", encode), ("fixed_chunk", fixed_chunk)):
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
        _measure(options, preset, count, supernodes, 1, sizes["repeats"])
        for count in sizes["points"] for supernodes in sizes["supernodes"] if supernodes <= count
    ]
    largest = rows[-1]
    rows += [_measure(options, preset, *batched, sizes["repeats"]) for batched in sizes["batched"]]
    summary = {
        "search_share_largest": largest["neighbours_s"] / largest["encode_s"],
        "points_per_s_largest": largest["points"] / largest["encode_s"],
    }
    mesh = preset["mesh_encoder"]
    return BenchResult(
        name="mesh",
        title=f"MeshEncoder scale ({sizes['preset']} preset: radius {mesh['radius']}, "
              f"max_neighbours {mesh['max_neighbours']}, search budget {mesh.get('search_budget_mib', 256)} MiB)",
        columns=COLUMNS,
        rows=rows,
        summary=summary,
        settings={**sizes, "mesh_encoder": mesh},
        notes=["search = select_supernodes + neighbours; encode = the whole forward (search included); "
               "RSS +MB = rise of resident memory during one call (no_grad, eval mode).",
               "The search holds one (batch, chunk, points) distance matrix at a time, chunk = budget / (4 batch "
               f"points) centres, so its memory stays near the budget; with a fixed chunk of {FIXED_CHUNK} centres "
               "it grows with the batch size times the point count."],
    )
