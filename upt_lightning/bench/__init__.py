"""Benchmarks of the UPT pipeline: ``python -m upt_lightning.bench NAME [--quick] [--out DIR] [--device D]``.

One module per benchmark, each with ``run(BenchOptions) -> BenchResult``: ``queries`` (training
step vs query sampling), ``rollout`` (latent vs physical), ``decoder`` (many query points),
``mesh`` (MeshEncoder scale), ``throughput`` (samples per second of both stages, latent cache),
``peak`` (achieved FLOP/s). Results are printed as tables and written as JSON (docs/performance.md
lists the keys).
"""
