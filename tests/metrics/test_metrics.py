"""Physical-space metrics against hand-computed values of PDEBench's definitions."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from upt_lightning.metrics import FieldErrorMetrics, RolloutErrorMetrics

TOL = dict(rtol=1e-6, atol=1e-9)


def _scalar(value: float) -> torch.Tensor:
    return torch.tensor(value, dtype=torch.float64)


def _assert_same_results(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], **TOL, msg=key)


def _grid_coordinates(n: int) -> torch.Tensor:
    return torch.arange(n, dtype=torch.float64) / n


def test_rmse_nrmse_crmse_max_error_match_hand_values():
    # 2 samples, 4 mesh points, channels u and v; error = pred - target.
    target = torch.tensor([[[1, 0], [1, 0], [1, 3], [1, 4]],
                           [[2, 1], [2, -1], [2, 1], [2, -1]]], dtype=torch.float64)
    error = torch.tensor([[[0, 3], [0, 0], [0, 0], [2, -4]],
                          [[1, -2], [1, -2], [1, -2], [1, -2]]], dtype=torch.float64)
    metric = FieldErrorMetrics(2, channel_names=["u", "v"])
    metric.update(target + error, target)
    out = metric.compute()
    # u: sample RMSE sqrt(4/4) = 1 and sqrt(4/4) = 1; target RMS 1 and 2; mean error 0.5 and 1.
    # v: sample RMSE sqrt((9+16)/4) = 2.5 and 2; target RMS 2.5 and 1; mean error -0.25 and -2.
    expected = {
        "rmse/u": (1 + 1) / 2, "rmse/v": (2.5 + 2) / 2,
        "nrmse/u": (1 / 1 + 1 / 2) / 2, "nrmse/v": (2.5 / 2.5 + 2 / 1) / 2,
        "crmse/u": math.sqrt((0.5**2 + 1**2) / 2), "crmse/v": math.sqrt((0.25**2 + 2**2) / 2),
        "max_err/u": 2.0, "max_err/v": 4.0,
    }
    for key, value in expected.items():
        torch.testing.assert_close(out[key], _scalar(value), **TOL, msg=key)
        name = key.split("/")[0]
        channel_mean = (expected[f"{name}/u"] + expected[f"{name}/v"]) / 2
        torch.testing.assert_close(out[name], _scalar(channel_mean), **TOL, msg=name)
    assert not any(key.startswith(("brmse", "frmse")) for key in out), "meshes have no grid metrics"


def test_brmse_counts_only_face_points_with_corners_on_each_face():
    target = torch.ones(2, 12, 1, dtype=torch.float64)
    error = torch.zeros(2, 3, 4, 1, dtype=torch.float64)
    error[0, 0, 0], error[0, 0, 1] = 1.0, 2.0  # corner (on 2 faces) and top edge
    error[1, 2, 3], error[1, 1, 0] = 3.0, 4.0  # corner and left edge
    metric = FieldErrorMetrics(1, grid_shape=(3, 4))
    metric.update(target + error.reshape(2, 12, 1), target)
    # Faces: rows 0 and 2 (4 points each), columns 0 and 3 (3 each): 2*4 + 2*3 = 14 terms.
    expected = (math.sqrt((2 * 1**2 + 2**2) / 14) + math.sqrt((2 * 3**2 + 4**2) / 14)) / 2
    torch.testing.assert_close(metric.compute()["brmse"], _scalar(expected), **TOL)

    interior = torch.zeros(1, 3, 4, 1, dtype=torch.float64)
    interior[0, 1, 1], interior[0, 1, 2] = 5.0, -5.0
    metric = FieldErrorMetrics(1, grid_shape=(3, 4))
    metric.update(target[:1] + interior.reshape(1, 12, 1), target[:1])
    out = metric.compute()
    torch.testing.assert_close(out["brmse"], _scalar(0.0), **TOL)
    torch.testing.assert_close(out["rmse"], _scalar(math.sqrt(50 / 12)), **TOL)


@pytest.mark.parametrize("grid_shape", [(5,), (1, 5)])
def test_brmse_1d_uses_both_end_points_and_ignores_singleton_axes(grid_shape):
    target = torch.ones(1, 5, 1, dtype=torch.float64)
    error = torch.tensor([3.0, 0.0, 7.0, 0.0, 4.0], dtype=torch.float64).view(1, 5, 1)
    metric = FieldErrorMetrics(1, grid_shape=grid_shape)
    metric.update(target + error, target)
    torch.testing.assert_close(metric.compute()["brmse"], _scalar(math.sqrt((3**2 + 4**2) / 2)), **TOL)


def _three_mode_error_1d(amplitudes: torch.Tensor) -> torch.Tensor:
    """(S, 3) amplitudes of sin(2 pi k x), k = 2, 8, 20 on 64 points -> (S, 64, 1)."""
    x = _grid_coordinates(64)
    modes = torch.stack([torch.sin(2 * math.pi * k * x) for k in (2, 8, 20)])
    return (amplitudes @ modes).unsqueeze(-1)


@pytest.mark.parametrize("f_low, f_high, shells", [(4, 12, (4, 8, 21)), (3, 9, (3, 6, 24))])
def test_frmse_1d_bands_see_one_mode_each(f_low, f_high, shells):
    # The rfft of A sin(2 pi k x_j), x_j = j / 64, has |F_k| = A * 64 / 2 at k and 0 elsewhere.
    # PDEBench's per-wavenumber value sqrt(mean over samples |F_k|^2) / 64 is therefore
    # sqrt(mean_s A_s^2) / 2, and a band averages it over its wavenumbers: 33 in all (0..32),
    # split (f_low, f_high - f_low, 33 - f_high) ways; each band holds exactly one mode.
    amplitudes = torch.tensor([[1.0, 2.0, 3.0], [3.0, 4.0, 6.0]], dtype=torch.float64)
    target = torch.ones(2, 64, 1, dtype=torch.float64)
    metric = FieldErrorMetrics(1, grid_shape=(64,), f_low=f_low, f_high=f_high)
    metric.update(target + _three_mode_error_1d(amplitudes), target)
    out = metric.compute()
    per_mode = amplitudes.square().mean(dim=0).sqrt() / 2
    for band, mode, count in zip(("low", "mid", "high"), per_mode, shells):
        torch.testing.assert_close(out[f"frmse_{band}"], mode / count, rtol=1e-6, atol=1e-9, msg=band)


def test_frmse_2d_bins_all_fourier_quadrants_by_radius():
    # 32 x 32 grid, row-major (x along axis 0). Each real mode sin(2 pi (a x + b y)) has
    # |F| = A * 1024 / 2 at (a, b) and (-a, -b); both carry weight 1/2, so its shell
    # floor(|(a, b)|) gets value A / 2. Shells 0..16: low 0..3 (4), mid 4..11 (8), high 12..16 (5).
    # (5, -3) lies outside the quadrant that PDEBench's 2D loop visits, which would miss it.
    x, y = torch.meshgrid(_grid_coordinates(32), _grid_coordinates(32), indexing="ij")
    amp_low, amp_mid, amp_high = 1.5, 2.0, 5.0
    error = (amp_low * torch.sin(2 * math.pi * 2 * x)              # |k| = 2 -> low
             + amp_mid * torch.sin(2 * math.pi * (5 * x - 3 * y))   # |k| = 5.83 -> shell 5, mid
             + amp_high * torch.sin(2 * math.pi * (12 * x + 9 * y)))  # |k| = 15 -> high
    target = torch.ones(1, 1024, 1)
    metric = FieldErrorMetrics(1, grid_shape=(32, 32))
    metric.update(target + error.reshape(1, 1024, 1).float(), target)  # float32, as models give
    out = metric.compute()
    for band, value in (("low", amp_low / 2 / 4), ("mid", amp_mid / 2 / 8), ("high", amp_high / 2 / 5)):
        torch.testing.assert_close(out[f"frmse_{band}"], _scalar(value), rtol=1e-5, atol=1e-6, msg=band)


@pytest.mark.parametrize("grid_shape, band, shells_in_band", [((8,), "mid", 1), ((4, 4), "low", 3)])
def test_frmse_nyquist_mode_counts_once_and_missing_band_is_left_out(grid_shape, band, shells_in_band):
    # A checkerboard c (-1)^(i + j + ...) is the self-conjugate Nyquist mode: |F| = c N with weight 1,
    # value c, in shell 4 for (8,) and floor(sqrt(8)) = 2 for (4, 4). Shells: 0..4 and 0..2.
    c = 0.5
    index_sum = sum(torch.meshgrid(*[torch.arange(n) for n in grid_shape], indexing="ij"))
    error = (c * (-1.0) ** index_sum).reshape(1, -1, 1).double()
    target = torch.ones_like(error)
    metric = FieldErrorMetrics(1, grid_shape=grid_shape)
    metric.update(target + error, target)
    out = metric.compute()
    torch.testing.assert_close(out[f"frmse_{band}"], _scalar(c / shells_in_band), **TOL)
    assert "frmse_high" not in out, "a grid without shells >= f_high has no high band"


def _random_batch(samples: int, points: int, channels: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    target = torch.randn(samples, points, channels, generator=generator, dtype=torch.float64)
    pred = target + 0.3 * torch.randn(samples, points, channels, generator=generator, dtype=torch.float64)
    return pred, target


def test_several_updates_equal_one_update_and_reset_forgets():
    pred, target = _random_batch(8, 30, 2)
    whole = FieldErrorMetrics(2, grid_shape=(6, 5))
    whole.update(pred, target)
    split = FieldErrorMetrics(2, grid_shape=(6, 5))
    split.update(pred[:3], target[:3])  # unequal batches: per-sample, not per-batch, averages
    split.update(pred[3:], target[3:])
    _assert_same_results(split.compute(), whole.compute())

    split.reset()
    split.update(pred[:3], target[:3])
    first_only = FieldErrorMetrics(2, grid_shape=(6, 5))
    first_only.update(pred[:3], target[:3])
    _assert_same_results(split.compute(), first_only.compute())


def test_padded_mesh_points_do_not_change_results():
    pred, target = _random_batch(2, 7, 2)
    real_points = (7, 4)
    mask = torch.arange(7).unsqueeze(0) < torch.tensor(real_points).unsqueeze(1)
    padded_pred = torch.where(mask.unsqueeze(-1), pred, torch.nan)  # garbage, not just zeros
    padded_target = torch.where(mask.unsqueeze(-1), target, 1e6)
    padded = FieldErrorMetrics(2)
    padded.update(padded_pred, padded_target, mask)
    separate = FieldErrorMetrics(2)
    for sample, count in enumerate(real_points):
        separate.update(pred[sample:sample + 1, :count], target[sample:sample + 1, :count])
    _assert_same_results(padded.compute(), separate.compute())

    rollout = RolloutErrorMetrics(1, 2)
    rollout.update(padded_pred.unsqueeze(1), padded_target.unsqueeze(1), mask)
    torch.testing.assert_close(rollout.compute()["nrmse"][0], separate.compute()["nrmse"], **TOL)


def test_rollout_metrics_per_step_match_hand_values():
    # Target 2 everywhere; at step k (1-based) sample 0 errs by k, sample 1 by 3k, at every point.
    steps = torch.arange(1, 4, dtype=torch.float64)
    error = torch.stack([steps, 3 * steps]).view(2, 3, 1, 1).expand(2, 3, 4, 1)
    target = torch.full((2, 3, 4, 1), 2.0, dtype=torch.float64)
    metric = RolloutErrorMetrics(3, 1, channel_names=["u"])
    metric.update(target + error, target)
    out = metric.compute()
    torch.testing.assert_close(out["rmse"], (steps + 3 * steps) / 2, **TOL)
    torch.testing.assert_close(out["nrmse"], (steps / 2 + 3 * steps / 2) / 2, **TOL)
    torch.testing.assert_close(out["crmse"], torch.sqrt((steps**2 + 9 * steps**2) / 2), **TOL)
    torch.testing.assert_close(out["max_err/u"], 3 * steps, **TOL)


def test_rollout_step_equals_one_step_metrics_of_that_frame():
    pred, target = _random_batch(3, 2 * 30, 2)
    pred, target = pred.view(3, 2, 30, 2), target.view(3, 2, 30, 2)
    rollout = RolloutErrorMetrics(2, 2, grid_shape=(6, 5))
    rollout.update(pred, target)
    per_step = rollout.compute()
    for step in range(2):
        frame = FieldErrorMetrics(2, grid_shape=(6, 5))
        frame.update(pred[:, step], target[:, step])
        _assert_same_results({key: value[step] for key, value in per_step.items()}, frame.compute())


@pytest.mark.parametrize(
    "kwargs, pred_shape, target_shape, mask, message",
    [
        ({}, (2, 6, 2), (2, 5, 2), None, "same shape"),
        ({}, (2, 6, 3), (2, 6, 3), None, "num_channels=2"),
        ({}, (6, 2), (6, 2), None, r"shape \(B, N, C\)"),
        ({"grid_shape": (2, 2)}, (2, 6, 2), (2, 6, 2), None, "grid_shape"),
        ({}, (2, 6, 2), (2, 6, 2), torch.ones(2, 5, dtype=torch.bool), "mask must be a bool tensor"),
        ({}, (2, 6, 2), (2, 6, 2), torch.ones(2, 6), "mask must be a bool tensor"),
        ({}, (2, 6, 2), (2, 6, 2), torch.tensor([[True] * 6, [False] * 6]), "without any real point"),
        ({"grid_shape": (6,)}, (2, 6, 2), (2, 6, 2), torch.tensor([[True] * 6, [True] * 5 + [False]]),
         "cannot be padded"),
    ],
)
def test_bad_inputs_raise_clear_errors(kwargs, pred_shape, target_shape, mask, message):
    metric = FieldErrorMetrics(2, **kwargs)
    with pytest.raises(ValueError, match=message):
        metric.update(torch.rand(pred_shape) + 1, torch.rand(target_shape) + 1, mask)


def test_non_finite_values_zero_targets_and_bad_arguments_raise():
    metric = FieldErrorMetrics(1)
    good = torch.ones(1, 4, 1)
    with pytest.raises(ValueError, match="NaN or inf"):
        metric.update(torch.tensor([[[1.0], [math.inf], [1.0], [1.0]]]), good)
    with pytest.raises(ValueError, match="NaN or inf"):
        metric.update(good, torch.tensor([[[1.0], [math.nan], [1.0], [1.0]]]))
    with pytest.raises(ValueError, match="nRMSE"):
        metric.update(good, torch.zeros(1, 4, 1))
    with pytest.raises(ValueError, match="horizon=3"):
        RolloutErrorMetrics(3, 1).update(torch.ones(1, 2, 4, 1), torch.ones(1, 2, 4, 1))
    with pytest.raises(ValueError, match="channel_names"):
        FieldErrorMetrics(2, channel_names=["u"])
    with pytest.raises(ValueError, match="f_low < f_high"):
        FieldErrorMetrics(1, grid_shape=(16,), f_low=8, f_high=4)
    with pytest.raises(ValueError, match="grid_shape"):
        FieldErrorMetrics(1, grid_shape=(0, 4))


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_compute_before_update_raises():
    with pytest.raises(RuntimeError, match="before any update"):
        FieldErrorMetrics(1).compute()


def _ddp_data():
    """8 samples of a (6, 5) grid, 2 channels, 2 rollout steps; the largest error of channel 0
    sits in a sample of rank 0 and that of channel 1 in a sample of rank 1."""
    pred, target = _random_batch(8, 2 * 30, 2, seed=3)
    pred, target = pred.view(8, 2, 30, 2), target.view(8, 2, 30, 2)
    pred[1, :, 4, 0] += 10.0
    pred[6, :, 9, 1] -= 12.0
    return pred, target


def _ddp_metrics():
    return FieldErrorMetrics(2, grid_shape=(6, 5)), RolloutErrorMetrics(2, 2, grid_shape=(6, 5))


def _ddp_worker(rank: int, world_size: int, store_path: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    store = dist.FileStore(store_path, world_size)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world_size)
    try:
        pred, target = _ddp_data()
        part = slice(0, 3) if rank == 0 else slice(3, 8)  # unequal shares
        field, rollout = _ddp_metrics()
        field.update(pred[part, 0], target[part, 0])
        rollout.update(pred[part], target[part])
        torch.save({"field": field.compute(), "rollout": rollout.compute()}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_ranks_compute_the_single_process_result(tmp_path):
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    pred, target = _ddp_data()
    field, rollout = _ddp_metrics()
    field.update(pred[:, 0], target[:, 0])
    rollout.update(pred, target)
    for rank in range(2):
        synced = torch.load(tmp_path / f"rank{rank}.pt")
        _assert_same_results(synced["field"], field.compute())
        _assert_same_results(synced["rollout"], rollout.compute())


def test_rollout_evaluation_reports_each_start_and_averages_over_them():
    from upt_lightning.modules.evaluation import RolloutEvaluation

    gen = torch.Generator().manual_seed(0)
    target = torch.randn(6, 3, 16, 2, generator=gen)
    last_input = torch.randn(6, 16, 2, generator=gen)
    # start 5's windows are predicted worse than start 0's
    pred = target + torch.tensor([0.1, 0.4] * 3).view(6, 1, 1, 1) * torch.randn(6, 3, 16, 2, generator=gen)
    t0 = torch.tensor([0, 5] * 3)
    both = RolloutEvaluation(3, 2, (16,), ["u", "v"], starts=[5, 0])
    both.update(pred[:4], target[:4], last_input[:4], t0=t0[:4])  # two batches, each holding both starts
    both.update(pred[4:], target[4:], last_input[4:], t0=t0[4:])
    out = both.compute_and_reset("test")
    for start in (0, 5):
        alone = RolloutEvaluation(3, 2, (16,), ["u", "v"])
        rows = t0 == start
        alone.update(pred[rows], target[rows], last_input[rows])
        reference = alone.compute_and_reset("test")
        for k in (1, 2, 3):
            for name in ("rollout", "persistence_rollout"):
                assert out[f"test/start{start}/{name}_nrmse_h{k}"] == pytest.approx(
                    float(reference[f"test/{name}_nrmse_h{k}"]), rel=1e-6)
    for k in (1, 2, 3):
        mean = (out[f"test/start0/rollout_nrmse_h{k}"] + out[f"test/start5/rollout_nrmse_h{k}"]) / 2
        assert out[f"test/rollout_nrmse_h{k}"] == pytest.approx(float(mean), rel=1e-6)
        assert out[f"test/start5/rollout_nrmse_h{k}"] > 2 * out[f"test/start0/rollout_nrmse_h{k}"]
    one = RolloutEvaluation(3, 2, (16,), ["u", "v"], starts=[0])  # one start: only the plain keys
    one.update(pred, target, last_input, t0=torch.zeros(6, dtype=torch.long))
    assert not [key for key in one.compute_and_reset("test") if "/start" in key]
