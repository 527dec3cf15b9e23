"""Cost of one stage-1 training step (encoder + decoder forward, backward, optimiser step) for decoder MLP ratios,
query counts and optimisers: the figures behind the default decoder and optimiser in docs/accuracy.md.

    python scripts/step_cost.py --out step_cost.json
    python scripts/step_cost.py --settings 1:128 --optimizers adamw,muon
    python scripts/step_cost.py --settings 1:128 --optimizers muon --decoders '{}' '{"periodic": true}'

Random fields on a 64x64 grid with two channels, the default encoder (one token per 8x8 patch) and the
one-layer decoder of 128; the median of ``--steps`` steps after ``--warmup``, each setting in ``--passes``
passes one after the other in this process (report the last: the first pass also warms the allocator).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from upt_lightning.models.builders import build_decoder, build_encoder
from upt_lightning.modules.optim import build_optimizer

ENCODER = {"kind": "grid", "patch_size": 8, "dim": 96, "depth": 2, "num_heads": 4, "pooling": "patch"}


def step_ms(mlp_ratio: float, queries: int, batch: int, steps: int, warmup: int, optimizer: str = "adamw",
            decoder_options: dict | None = None) -> float:
    spec, grid = {"u": 1, "v": 1}, (64, 64)
    encoder = build_encoder(ENCODER, spec, grid, 2, 64, 64)
    decoder = build_decoder({"dim": 128, "depth": 1, "num_heads": 4, "num_frequencies": 6, "mlp_ratio": mlp_ratio,
                             **(decoder_options or {})}, spec, 2, 64)
    params = [*encoder.parameters(), *decoder.parameters()]
    optimizer = build_optimizer(params, 1e-3, warmup + steps, optimizer=optimizer, muon_lr_ratio=2.5)["optimizer"]
    fields = {"u": torch.randn(batch, 4096, 1), "v": torch.randn(batch, 4096, 1)}
    coords, points = torch.rand(1, 4096, 2).expand(batch, -1, -1), torch.rand(batch, queries, 2)
    times = []
    for _ in range(warmup + steps):
        start = time.perf_counter()
        out = decoder(points, encoder(fields, coords))
        loss = sum((value ** 2).mean() for value in out.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    measured = sorted(times[warmup:])
    return 1000 * measured[len(measured) // 2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--settings", default="4:256,4:128,1:256,1:128", help="MLP ratio:queries pairs")
    p.add_argument("--optimizers", default="adamw", help="comma-separated: adamw, adam, muon")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--passes", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--decoders", nargs="+", default=["{}"],
                   help="JSON objects of extra decoder arguments, one setting each (e.g. '{\"periodic\": true}')")
    p.add_argument("--out", default=None, help="write the figures of the last pass as JSON")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    settings = [(float(r), int(q)) for r, q in (item.split(":") for item in a.settings.split(","))]
    result = {}
    for number in range(1, a.passes + 1):
        for optimizer in a.optimizers.split(","):
            for ratio, queries in settings:
                for extra in a.decoders:
                    ms = step_ms(ratio, queries, a.batch, a.steps, a.warmup, optimizer, json.loads(extra))
                    key = f"optimizer={optimizer},mlp_ratio={ratio:g},queries={queries}"
                    result[key if extra == "{}" else f"{key},decoder={extra}"] = round(ms, 1)
                    print(f"pass {number}: {optimizer}, decoder MLP ratio {ratio:g}, {queries} queries, batch "
                          f"{a.batch}, decoder {extra}: {ms:.1f} ms/step", flush=True)
    if a.out:
        with open(a.out, "w") as fh:
            json.dump({"threads": a.threads, "batch": a.batch, "ms_per_step": result}, fh, indent=2)


if __name__ == "__main__":
    main()
