"""A table of bad inputs to train.py (data files, configs, checkpoints): each fails early, names the problem,
shows no traceback, and leaves every file of an earlier run and of the stage-1 cache byte-identical.

In-process cases run the pipeline as train.py does and check that the error is a user error (which
train.py prints as "error: ..." with exit status 2); subprocess cases (slow) run train.py itself.
Lower-level checks of the readers are in tests/data/test_bad_inputs.py.
"""

import re
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
from omegaconf import OmegaConf

from helpers.bad_input_files import grid_file, grid_overrides, mesh_file, real_checkpoints
from helpers.entry import TINY_COMMON, compose_train, run_train
from upt_lightning.errors import is_user_error
from upt_lightning.pipeline import run_experiment

SUBPROCESS = pytest.mark.slow


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad_inputs")
    return SimpleNamespace(tmp=tmp, good=grid_file(tmp / "good.h5"), ckpt=real_checkpoints(tmp))


def on_file(mutate=None, *extra, **kwargs):
    return lambda c, t: grid_overrides(t, grid_file(t / "f.h5", mutate, **kwargs), *extra)


def on_good(*extra):
    return lambda c, t: grid_overrides(t, c.good, *extra)


def with_ckpt(key, name, *extra):
    return lambda c, t: grid_overrides(t, c.good, f"{key}={c.ckpt[name]}", *extra)


def truncated(c, t):
    (t / "cut.h5").write_bytes(c.good.read_bytes()[:4000])
    return grid_overrides(t, t / "cut.h5")


def not_a_checkpoint(c, t):
    (t / "notes.ckpt").write_text("training notes, not a checkpoint")
    return grid_overrides(t, c.good, f"autoencoder_ckpt={t / 'notes.ckpt'}")


def cut_checkpoint(c, t):
    (t / "cut.ckpt").write_bytes(c.ckpt["small_stage2"].read_bytes()[:5000])
    return grid_overrides(t, c.good, f"resume={t / 'cut.ckpt'}")


def mesh(c, t, *extra, supernodes=32):
    return ["+experiment=burgers_mesh_upt", f"data_dir={t / 'data'}", f"cache_dir={t / 'cache'}", *TINY_COMMON,
            f"data.path={mesh_file(t / 'm.h5', points=20)}", "data.generate=null", "sampling.num_queries=16",
            "model.mesh_encoder.pooling=supernode", f"model.mesh_encoder.num_supernodes={supernodes}", *extra]


def nan(key, index):
    def mutate(data):
        data[key][index] = np.nan if key != "tensor" else np.inf
    return mutate


def drop(key):
    return lambda data: data.pop(key)


def replace(key, fn):
    return lambda data: data.__setitem__(key, fn(data[key]))


CASES = [
    # data files
    ("truncated HDF5", truncated, r"cut\.h5 cannot be opened as HDF5 .*truncated or corrupt", SUBPROCESS),
    ("wrong dtype", on_file(replace("tensor", lambda v: v.astype("S8"))), r"dtype \|S8, not real numbers", None),
    ("NaN in coordinates", on_file(nan("x-coordinate", 3)), r"coordinates of trajectory 0 contains 1 NaN", None),
    ("Inf in a test frame", on_file(nan("tensor", (5, 6, 3))), r"trajectory 5, frames .* 1 NaN or Inf", None),
    ("times go backwards", on_file(replace("t-coordinate", lambda t: np.r_[t[:4], t[2], t[5:]])),
     r"times of trajectory 0 do not increase strictly", None),
    ("zero-size grid", on_file(points=0), r"trajectory 0 has 0 points", None),
    ("dataset key missing", on_file(drop("x-coordinate")), r"root lacks \['x-coordinate'\]", None),
    ("wrong rank", on_file(replace("tensor", lambda v: v[:, :, 0])), r"'/tensor' has rank 2", None),
    ("t-coordinate length", on_file(replace("t-coordinate", lambda t: t[:3])), r"'/t-coordinate' has shape \(3,\)", None),
    ("data file missing", lambda c, t: grid_overrides(t, t / "nope.h5"), r"nope\.h5 does not exist", None),
    ("mesh smaller than supernodes", mesh, r"num_supernodes=32 exceeds the 20 points .*at most 20", SUBPROCESS),
    ("refinement points above the mesh",
     lambda c, t: mesh(c, t, "stage2.inference_refinement.points=64", supernodes=16),
     r"stage2\.inference_refinement\.points=64 exceeds the 20 points .*at most 20", None),
    # configs
    ("unknown experiment", lambda c, t: ["+experiment=no_such_experiment"], r"no_such_experiment.*burgers_upt",
     SUBPROCESS),
    ("split not summing to 1", on_good("data.split=[0.5,0.2,0.2]"), r"data\.split=\[0\.5, 0\.2, 0\.2\] must", None),
    ("batch_size 0", on_good("data.batch_size=0"), r"data\.batch_size=0 must be a positive integer", None),
    ("unknown data argument", on_good("+data.bogus=1"), r"data: .*bogus", None),
    ("resume=never over checkpoints", on_good("resume=never"), r"resume=never, but the run dir .*last\.ckpt", None),
    ("changed config over checkpoints", on_good("stage2.lr=0.01"), r"another config \(stage2\.lr: 0\.002 -> 0\.01\)",
     None),
    # checkpoints
    ("autoencoder_ckpt not a checkpoint", not_a_checkpoint, r"notes\.ckpt is not a readable PyTorch checkpoint",
     SUBPROCESS),
    ("autoencoder_ckpt missing", lambda c, t: grid_overrides(t, c.good, f"autoencoder_ckpt={t / 'no.ckpt'}"),
     r"autoencoder_ckpt=\S+no\.ckpt does not exist", None),
    ("autoencoder_ckpt is stage 2", with_ckpt("autoencoder_ckpt", "small_stage2"), r"found a stage-2", None),
    ("autoencoder_ckpt of other fields", with_ckpt("autoencoder_ckpt", "two_field_stage1", "model=small"),
     r"trained on other data .*fields: checkpoint \{'c0': 1, 'c1': 1\}, now \{'u': 1\}", None),
    ("autoencoder_ckpt of another model size", with_ckpt("autoencoder_ckpt", "small_stage1"),
     r"another model size \(model\.latent_tokens: checkpoint 64, now 8", SUBPROCESS),
    ("autoencoder_ckpt that runs code", with_ckpt("autoencoder_ckpt", "trap"), r"trap\.ckpt was refused", SUBPROCESS),
    ("resume from stage 1", with_ckpt("resume", "small_stage1", "model=small"), r"is not a stage-2 .*found a stage-1",
     None),
    ("resume of another model size", with_ckpt("resume", "small_stage2"), r"another model size .*model\.operator", None),
    ("resume from a truncated file", cut_checkpoint, r"cut\.ckpt is not a readable PyTorch checkpoint", None),
]


def earlier_run(c, t, overrides):
    """Files of an earlier run in the run dir and the stage-1 cache; the two resume cases add checkpoints."""
    run, cache = t / "run", t / "cache"
    (cache / "0123456789abcdef").mkdir(parents=True)
    shutil.copyfile(c.ckpt["small_stage1"], cache / "0123456789abcdef" / "autoencoder.ckpt")
    (run / "stage1").mkdir(parents=True)
    (run / "results.json").write_text('{"objective": 0.5}')
    (run / "config.yaml").write_text("seed: 0\n")
    (run / "stage1" / "metrics.csv").write_text("epoch,loss\n0,1.0\n")
    if any(o.startswith(("resume=never", "stage2.lr")) for o in overrides):
        (run / "stage2" / "checkpoints").mkdir(parents=True)
        shutil.copyfile(c.ckpt["small_stage2"], run / "stage2" / "checkpoints" / "last.ckpt")
        earlier = [o for o in overrides if not o.startswith(("resume=", "stage2.lr"))]
        (run / "config.yaml").write_text(OmegaConf.to_yaml(compose_train(earlier), resolve=True))
    return {p: p.read_bytes() for p in t.rglob("*") if p.is_file() and p.parts[len(t.parts)] in ("run", "cache")}


@pytest.mark.parametrize("name, build, message, mark",
                         [pytest.param(*case, id=case[0], marks=case[3] or ()) for case in CASES])
def test_bad_input_fails_early_with_a_message_and_keeps_earlier_files(ctx, tmp_path, name, build, message, mark):
    overrides = build(ctx, tmp_path)
    if mark is SUBPROCESS:
        before = earlier_run(ctx, tmp_path, overrides)
        done = run_train([*overrides, f"hydra.run.dir={tmp_path / 'run'}"], timeout=180)
        assert done.returncode == (1 if "experiment=no_such" in overrides[0] else 2), done.stderr[-3000:]
        assert re.search(message, done.stderr, re.S), done.stderr[-3000:]
        assert "Traceback" not in done.stderr
    else:
        overrides.append(f"+run_dir={tmp_path / 'run'}")
        before = earlier_run(ctx, tmp_path, overrides)
        with pytest.raises(Exception) as info:
            run_experiment(compose_train(overrides))
        assert is_user_error(info.value), f"{type(info.value).__name__} would print a traceback: {info.value}"
        assert re.search(message, str(info.value), re.S), str(info.value)
    for path, content in before.items():
        assert path.read_bytes() == content, f"{path} was changed"
    new = {p for p in tmp_path.rglob("*") if p.is_file() and p.parts[len(tmp_path.parts)] in ("run", "cache")}
    allowed = ("train.log", ".hydra", "validated")  # Hydra's own files, data-scan stamps
    assert not [p for p in new - set(before) if not set(p.parts) & set(allowed)]
    assert not (tmp_path / "code_ran").exists() and not (ctx.tmp / "code_ran").exists()
