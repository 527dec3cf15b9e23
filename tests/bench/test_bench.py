"""`python -m upt_lightning.bench all --quick` runs every benchmark and writes the documented JSON.

No timing is asserted (the CI machine is shared); the checks are on the files' structure, on the
values being finite and positive, and on the quantities that do not depend on timing.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from upt_lightning.bench import rollout
from upt_lightning.bench.__main__ import main
from upt_lightning.bench.memory import METHOD_RESET, track_peak_memory
from upt_lightning.bench.options import BenchOptions
from upt_lightning.bench.report import print_result
from upt_lightning.bench.presets import load_model_preset
from upt_lightning.bench.rollout import physical_rollout_one_decode
from upt_lightning.bench.workloads import grid_batch, grid_operator_module

# The keys docs/performance.md documents: numbers > 0, numbers >= 0 (memory rises may be 0), labels.
POSITIVE = "positive"
NON_NEGATIVE = "non-negative"
LABEL = "label"
ROW_KEYS = {
    "queries": {"strategy": LABEL, "num_queries": POSITIVE, "step_s": POSITIVE, "inv_enc_s": POSITIVE,
                "inv_dec_s": POSITIVE, "step_saved_mb": POSITIVE, "decoder_saved_mb": POSITIVE,
                "inv_dec_saved_mb": POSITIVE, "peak_rss_mb": POSITIVE, "rss_increase_mb": NON_NEGATIVE},
    "rollout": {"steps": POSITIVE, "latent_final_s": POSITIVE, "latent_all_s": POSITIVE, "physical_s": POSITIVE,
                "physical_one_decode_s": POSITIVE, "speedup_final": POSITIVE, "speedup_all": POSITIVE},
    "decoder": {"method": LABEL, "points": POSITIVE, "time_s": POSITIVE, "points_per_s": POSITIVE,
                "peak_rss_mb": POSITIVE, "rss_increase_mb": NON_NEGATIVE},
    "mesh": {"points": POSITIVE, "supernodes": POSITIVE, "batch": POSITIVE, "fixed_chunk_s": POSITIVE,
             "fixed_chunk_rss_mb": NON_NEGATIVE, "neighbours_s": POSITIVE, "encode_s": POSITIVE,
             "neighbours_rss_mb": NON_NEGATIVE, "encode_rss_mb": NON_NEGATIVE, "saved_mb": POSITIVE},
    "throughput": {"run": LABEL, "samples_per_s": POSITIVE, "step_s": POSITIVE, "between_s": POSITIVE,
                   "loader_s": POSITIVE, "loader_share": POSITIVE},
    "peak": {"workload": LABEL, "gflop": POSITIVE, "time_s": POSITIVE, "gflop_per_s": POSITIVE,
             "fraction_of_matmul": POSITIVE},
    "allocator": {"allocator": LABEL, "time_s": POSITIVE, "page_faults": NON_NEGATIVE},
    "prediction_cost": {"grid": LABEL, "method": LABEL, "key": LABEL, "total_s": POSITIVE, "ms_per_frame": POSITIVE,
                        "over_solver": POSITIVE},
}
SUMMARY_KEYS = {
    "queries": ("decoder_saved_ratio_half", "step_saved_ratio_half", "step_speedup_half", "inv_enc_speedup_half",
                "inv_dec_speedup_half", "inverse_share_of_dense_step", "step_speedup_half_vs_exact_inv_dec",
                "step_saved_ratio_half_vs_exact_inv_dec"),
    "rollout": ("reference_steps", "latent_speedup", "latent_all_decoded_speedup",
                "latent_speedup_vs_rollout_physical", "physical_decodes_per_step"),
    "decoder": ("memory_ratio_decoder_chunks", "memory_ratio_streamed", "points_per_s_largest"),
    "mesh": ("search_share_largest", "points_per_s_largest"),
    "throughput": ("cache_speedup", "cache_speedup_inverse_off", "cache_speedup_inverse_off_with_fields",
                   "max_loader_share", "cache_build_s", "cached_windows"),
    "peak": ("matmul_gflop_per_s", "step_gflop_per_s", "step_fraction_of_matmul", "flop_share_GridEncoder",
             "flop_share_AnyPointDecoder", "flop_share_LatentOperator"),
    "allocator": ("speedup",),
    "prediction_cost": tuple(f"{key}_over_solver_16x16" for key in ("upt_refined_all", "upt_plain_all",
                                                                    "upt_refined_last", "upt_physical")),
}
TARGET_COUNT = {"queries": 2, "rollout": 1, "decoder": 1, "mesh": 0, "throughput": 3, "peak": 0, "allocator": 0,
                "prediction_cost": 0}
# rollout's second table: the FNO baseline beside UPT's latent rollout (needs neuraloperator).
FNO_ROW_KEYS = {"grid": LABEL, "steps": POSITIVE, "upt_latent_final_s": POSITIVE, "upt_latent_all_s": POSITIVE,
                "fno_s": POSITIVE, "fno_over_upt_latent_all": POSITIVE, "fno_over_upt_latent_final": POSITIVE}
HAS_NEURALOP = importlib.util.find_spec("neuralop") is not None


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, "-m", "upt_lightning.bench", "all", "--quick", "--out", str(out)],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert done.returncode == 0, f"bench all --quick failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return {name: json.loads((out / f"{name}.json").read_text()) for name in ROW_KEYS}


def _check_number(where: str, value, kind: str) -> None:
    assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{where} is {value!r}, not a number"
    assert math.isfinite(value), f"{where} is not finite"
    assert value > 0 if kind == POSITIVE else value >= 0, f"{where} = {value} is not {kind}"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ROW_KEYS))
def test_every_benchmark_writes_its_documented_keys(results, name):
    data = results[name]
    assert data["benchmark"] == name and data["quick"] is True
    assert data["environment"]["device"] == "cpu" and data["environment"]["torch_threads"] >= 1
    assert data["rows"], f"{name} has no rows"
    for index, row in enumerate(data["rows"]):
        for key, kind in ROW_KEYS[name].items():
            assert key in row, f"{name} row {index} lacks {key}"
            if kind == LABEL:
                assert isinstance(row[key], str) and row[key]
            else:
                _check_number(f"{name} row {index} {key}", row[key], kind)
    for key in SUMMARY_KEYS[name]:
        _check_number(f"{name} summary {key}", data["summary"].get(key), POSITIVE)
    assert len(data["targets"]) == TARGET_COUNT[name]
    for target in data["targets"]:
        _check_number(f"{name} target {target['name']}", target["value"], POSITIVE)
        expected = target["value"] <= target["threshold"] if target["comparison"] == "<=" else \
            target["value"] >= target["threshold"]
        assert target["met"] is expected


@pytest.mark.slow
def test_saved_bytes_follow_the_query_count(results):
    rows = results["queries"]["rows"]
    dense, points = rows[0], math.prod(results["queries"]["settings"]["grid"])
    assert dense["strategy"] == "dense" and dense["num_queries"] == points
    for strategy in ("uniform", "stratified"):
        sampled = sorted((r for r in rows if r["strategy"] == strategy), key=lambda r: -r["num_queries"])
        assert [r["num_queries"] for r in sampled] == [points // 2, points // 4, points // 8]
        decoder = [dense["decoder_saved_mb"]] + [r["decoder_saved_mb"] for r in sampled]
        # The decoder's activations are per query: halving Q halves them, up to the shared latent part.
        for more, fewer in zip(decoder, decoder[1:]):
            assert 0.45 < fewer / more < 0.55
        # L_inv_dec re-encodes the full grid whatever Q is, but its decoder keeps activations at the Q points only.
        inv_dec = [dense["inv_dec_saved_mb"]] + [r["inv_dec_saved_mb"] for r in sampled]
        assert all(fewer < more for more, fewer in zip(inv_dec, inv_dec[1:]))
    exact = rows[-1]  # Q = N/2 with the full-grid backward of L_inv_dec: what the dense L_inv_dec keeps
    assert exact["strategy"].startswith("uniform, exact") and exact["num_queries"] == points // 2
    assert exact["inv_dec_saved_mb"] == pytest.approx(dense["inv_dec_saved_mb"], rel=1e-6)


@pytest.mark.slow
def test_sizes_follow_the_quick_settings(results):
    assert [r["steps"] for r in results["rollout"]["rows"]] == list(results["rollout"]["settings"]["steps"])
    decoder_points = sorted({r["points"] for r in results["decoder"]["rows"]})
    assert decoder_points == list(results["decoder"]["settings"]["points"])
    assert all(r["supernodes"] <= r["points"] for r in results["mesh"]["rows"])
    assert len(results["throughput"]["rows"]) == 6


@pytest.mark.slow
@pytest.mark.skipif(not HAS_NEURALOP, reason="the FNO rows need neuraloperator (the baselines extra)")
def test_rollout_counts_one_decode_per_physical_step_and_says_so(results):
    data = results["rollout"]
    assert data["summary"]["physical_decodes_per_step"] == 1
    notes = " ".join(data["notes"])
    assert "decodes the grid 1 time(s) per step" in notes and "twice" not in notes


def test_rollout_times_the_fno_beside_upt_on_each_grid(results):
    data = results["rollout"]
    table = data["tables"]["fno"]
    assert table["title"] and table["rows"]
    for index, row in enumerate(table["rows"]):
        for key, kind in FNO_ROW_KEYS.items():
            assert key in row, f"fno row {index} lacks {key}"
            if kind == LABEL:
                assert isinstance(row[key], str) and row[key]
            else:
                _check_number(f"fno row {index} {key}", row[key], kind)
        assert row["fno_over_upt_latent_all"] == pytest.approx(row["fno_s"] / row["upt_latent_all_s"])
    settings = data["settings"]
    expected = [("x".join(map(str, grid)), steps) for grid in settings["fno_grids"] for steps in settings["fno_steps"]]
    assert [(row["grid"], row["steps"]) for row in table["rows"]] == expected
    _check_number("rollout summary fno_over_upt_latent_all", data["summary"]["fno_over_upt_latent_all"], POSITIVE)


def test_rollout_skips_the_fno_rows_with_a_note_without_neuraloperator(monkeypatch, tmp_path):
    from rich.console import Console

    from upt_lightning.errors import ConfigError

    def missing():
        raise ConfigError("neuraloperator cannot be imported")

    monkeypatch.setattr(rollout, "require_neuralop", missing)
    monkeypatch.setitem(rollout.QUICK, "steps", (1,))
    monkeypatch.setitem(rollout.QUICK, "repeats", 1)
    result = rollout.run(BenchOptions(quick=True, out_dir=tmp_path))
    assert result.tables == [] and [row["steps"] for row in result.rows] == [1]
    assert "fno_over_upt_latent_all" not in result.summary
    console = Console(record=True, width=200)
    print_result(result, console)
    assert 'FNO rows skipped: neuraloperator is not installed (pip install -e ".[baselines]")' in console.export_text()


def test_one_decode_physical_rollout_equals_the_modules_physical_rollout():
    module = grid_operator_module(load_model_preset("tiny"), (16, 16)).eval()
    module.normalizer.set_stats({"field_mean": torch.tensor([0.3, -0.2]), "field_std": torch.tensor([2.0, 0.5]),
                                 "coord_min": torch.zeros(2), "coord_max": torch.ones(2)}, dt=0.1)
    batch = grid_batch(2, (16, 16))
    expected = module.rollout(batch["fields"], batch["coords"], 4, mode="physical")
    latent_only = module.rollout(batch["fields"], batch["coords"], 4, mode="latent")
    got = physical_rollout_one_decode(module, batch["fields"], batch["coords"], 4)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got[:, 1:], latent_only[:, 1:], atol=1e-4), "the two modes must differ after step 1"


def test_peak_memory_sees_an_allocation_and_ignores_a_no_op():
    with track_peak_memory() as idle:
        pass
    with track_peak_memory() as busy:
        block = torch.ones(64 * 2**20 // 4)  # 64 MiB, written, hence resident
        del block
    if busy.method != METHOD_RESET:
        pytest.skip("this system cannot reset the RSS high-water mark")
    assert busy.rss_increase_bytes >= 60 * 2**20
    assert idle.rss_increase_bytes < 16 * 2**20
    assert busy.peak_rss_bytes >= busy.rss_increase_bytes


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error shown when CUDA is missing")
def test_cuda_without_a_gpu_and_unknown_names_are_refused(capsys):
    with pytest.raises(SystemExit):
        main(["queries", "--device", "cuda"])
    assert "no CUDA device is available; use --device cpu" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["querys"])
    assert "invalid choice: 'querys'" in capsys.readouterr().err


def test_prediction_cost_times_every_method_on_every_grid_and_its_solver_makes_the_data(results):
    from upt_lightning.bench.prediction_cost import burgers_starts, solver_frames
    from upt_lightning.data.solvers.trajectories import burgers2d_grid_trajectories

    rows = results["prediction_cost"]["rows"]
    expected = {"upt_refined_all", "upt_plain_all", "upt_refined_last", "upt_physical", "solver"}
    expected |= {"fno"} if HAS_NEURALOP else set()
    for grid in ("16x16", "32x32"):
        assert {row["key"] for row in rows if row["grid"] == grid} == expected
        assert next(row["over_solver"] for row in rows if row["grid"] == grid and row["key"] == "solver") == 1.0
    # The solver's frames are the data set's: its trajectory 0 (seed 0), solved on 16x16, written on 32x32.
    options = {"resolution": 16, "output_resolution": 32, "max_wavenumber": 3, "num_steps": 3, "dt_out": 0.05,
               "nu": 0.015, "amplitude": 0.5, "cfl": 0.5, "batch_size": 1}
    data = next(burgers2d_grid_trajectories(1, 0, select=[0], **options))  # (T, X, Y, 2)
    frames = solver_frames(burgers_starts(1, 16), 2, 32)  # (1, 2, 2, X, Y)
    torch.testing.assert_close(frames[0].permute(0, 2, 3, 1), data[1:], rtol=1e-6, atol=1e-8)
