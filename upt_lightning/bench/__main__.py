"""Command line: ``python -m upt_lightning.bench {queries,rollout,decoder,mesh,throughput,peak,allocator,prediction_cost,all}``."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch
from rich.console import Console

from upt_lightning.bench import allocator, decoder, mesh, peak, prediction_cost, queries, rollout, throughput
from upt_lightning.bench.options import BenchOptions
from upt_lightning.bench.plots import plot_queries
from upt_lightning.bench.report import environment, print_result, write_json

BENCHMARKS = {
    "queries": queries.run,
    "rollout": rollout.run,
    "decoder": decoder.run,
    "mesh": mesh.run,
    "throughput": throughput.run,
    "peak": peak.run,
    "allocator": allocator.run,
    "prediction_cost": prediction_cost.run,
}
PLOTS = {"queries": plot_queries}


def parse_device(text: str) -> torch.device:
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"--device {text!r} is not a torch device; use cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"--device {text!r}: the benchmarks support cpu and cuda only")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"--device {text!r}: no CUDA device is available; use --device cpu")
    return device


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m upt_lightning.bench",
        description="Benchmarks of the UPT pipeline; each prints a table and writes OUT/NAME.json "
                    "(keys and measured results: docs/performance.md).",
    )
    parser.add_argument("name", choices=[*BENCHMARKS, "all"], help="benchmark to run, or all of them")
    parser.add_argument("--quick", action="store_true", help="smallest sizes and fewest repeats (CI smoke run)")
    parser.add_argument("--out", type=Path, default=Path("bench_results"),
                        help="directory for the JSON results (default: bench_results)")
    parser.add_argument("--device", type=parse_device, default=parse_device("auto"),
                        help="cpu, cuda or cuda:N (default: cuda when available, else cpu)")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="torch CPU threads (default: torch's choice, usually one per core)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    options = BenchOptions(quick=args.quick, device=args.device, out_dir=args.out)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    console = Console(width=160)
    env = environment(options.device)
    console.print(f"device: {env['device_name']} ({env['device']}), {env['torch_threads']} torch threads, "
                  f"torch {env['torch']}{', quick sizes' if options.quick else ''}")
    names = list(BENCHMARKS) if args.name == "all" else [args.name]
    for name in names:
        start = time.perf_counter()
        result = BENCHMARKS[name](options)
        print_result(result, console)
        path = write_json(result, options.out_dir, env, options.quick)
        if name in PLOTS:
            console.print(f"  plotted {PLOTS[name](result, options.out_dir / f'{name}.png')}")
        console.print(f"  wrote {path} ({time.perf_counter() - start:.1f} s)\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
