"""train.py under faults: a diverging run, nan_policy settings, and a DDP run whose test metrics are synced."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from entry_helpers import REPO, run_train, tiny_overrides
from upt_lightning.errors import ConfigError
from upt_lightning.pipeline.config_checks import check_config


def compose_train(overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
        return compose("train", overrides=overrides)


@pytest.mark.parametrize("overrides, message", [
    (["nan_policy=ignore"], "nan_policy='ignore' is unknown; choose one of ['raise', 'skip']"),
    (["nan_policy=skip", "trainer=ddp_cpu"], "nan_policy=skip works on one process only"),
])
def test_bad_nan_policy_is_a_config_error_naming_the_key(tmp_path, overrides, message):
    cfg = compose_train([*tiny_overrides("burgers_upt", tmp_path), *overrides])
    with pytest.raises(ConfigError) as raised:
        check_config(cfg)
    assert message in str(raised.value)
    check_config(compose_train(tiny_overrides("burgers_upt", tmp_path)))  # the default (raise) passes
    check_config(compose_train([*tiny_overrides("burgers_upt", tmp_path), "nan_policy=skip"]))


@pytest.mark.slow
def test_diverging_stage2_stops_with_a_message_and_keeps_stage1(tmp_path):
    """An absurd stage-2 learning rate: AdamW's first update overflows the operator, the next loss is NaN."""
    run_dir = tmp_path / "run"
    done = run_train([*tiny_overrides("burgers_upt", tmp_path / "data"), "stage2.lr=1e30", "evaluate.plots=false",
                      "evaluate.superres=false", f"hydra.run.dir={run_dir}"])
    assert done.returncode == 2, done.stderr[-3000:]
    assert "error: non-finite training loss at global step 1 (epoch 0, batch 1): L_forward=nan" in done.stderr
    assert "set nan_policy=skip" in done.stderr
    assert "Traceback" not in done.stderr
    # What stage 1 wrote is still there, and the cache serves the next (fixed) run.
    assert list((tmp_path / "data" / "stage1_cache").glob("*/autoencoder.ckpt"))
    assert list((run_dir / "stage1" / "checkpoints").glob("*.ckpt"))
    assert not (run_dir / "results.json").exists()
