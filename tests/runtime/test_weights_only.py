"""Nothing loaded from a checkpoint or a data file can run code: a booby-trapped file is refused unexecuted."""

import ast
import builtins
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from upt_lightning.cli import main as upt_main
from upt_lightning.data.readers import open_source
from upt_lightning.errors import CheckpointError
from upt_lightning.modules import AutoencoderModule, OperatorModule
from upt_lightning.runtime.checkpoints import load_autoencoder_checkpoint, read_checkpoint
from upt_lightning.pipeline.resume import find_resume_checkpoint

REPO = Path(__file__).resolve().parents[2]


class CreatesMarker:
    """Unpickling this calls open(marker, "w"): a stand-in for any code a crafted file could run."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


@pytest.fixture
def trap(tmp_path):
    """(checkpoint path, marker path): a Lightning-shaped checkpoint whose hyperparameters hold the trap."""
    marker = tmp_path / "code_ran"
    path = tmp_path / "last.ckpt"
    torch.save({"epoch": 1, "global_step": 4, "loops": {}, "optimizer_states": [], "state_dict": {},
                "hyper_parameters": {"field_channels": {"u": 1}, "coord_dim": 1, "payload": CreatesMarker(marker)}},
               path)
    return path, marker


def test_the_trap_works_when_loaded_unsafely(trap):
    path, marker = trap
    torch.load(path, weights_only=False)
    assert marker.exists()  # so its absence below means the loaders refused it


def test_our_loaders_refuse_the_file_without_running_it(trap):
    path, marker = trap
    with pytest.raises(CheckpointError, match=r"was refused: it holds a pickled .*open"):
        read_checkpoint(path)
    with pytest.raises(CheckpointError, match="was refused"):
        load_autoencoder_checkpoint(path)
    with pytest.raises(CheckpointError, match="was refused"):
        OperatorModule(autoencoder_ckpt=str(path))
    for module in (AutoencoderModule, OperatorModule):  # as pipeline/stage2.py loads the best checkpoint
        with pytest.raises(Exception, match="Weights only load failed"):
            module.load_from_checkpoint(path, weights_only=True)
    assert find_resume_checkpoint(path.parent) is None  # skipped (and moved aside) when resuming
    assert (path.parent / "last.ckpt.unreadable").is_file()
    assert not marker.exists()


def test_cli_refuses_the_file_with_a_message(trap, capsys, monkeypatch):
    path, marker = trap
    monkeypatch.setattr(sys, "argv", ["upt"])  # not pytest's own arguments, which LightningCLI would warn about
    code = upt_main(["validate", "--config", str(REPO / "conf/cli/burgers_upt.yaml"), "--ckpt_path", str(path)])
    assert code == 2
    err = capsys.readouterr().err
    assert "was refused" in err and str(path) in err and "Traceback" not in err
    assert not marker.exists()


def test_hdf5_attributes_are_never_unpickled(tmp_path):
    import pickle

    marker = tmp_path / "code_ran"
    path = tmp_path / "m.h5"
    with h5py.File(path, "w") as file:
        file.attrs["layout"] = "upt_mesh"
        file.attrs["field_names"] = np.void(pickle.dumps(CreatesMarker(marker)))
        file["0000/coords"] = np.zeros((3, 2), np.float32)
        file["0000/data"] = np.ones((2, 3, 1), np.float32)
        file["0000/t"] = np.arange(2.0)
    try:
        open_source(path).frames(0, [0])
    except ValueError:
        pass  # refusing the odd attribute is fine; running it is not
    assert not marker.exists()


def checkpoint_loads(tree: ast.AST):
    """Calls that unpickle a checkpoint: torch.load, *.load_from_checkpoint, *.fit/validate/test(ckpt_path=...)."""
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        name, receiver = node.func.attr, ast.unparse(node.func.value)
        keywords = {k.arg for k in node.keywords}
        if (name == "load" and receiver == "torch") or name == "load_from_checkpoint" or (
                name in ("fit", "validate", "test") and "ckpt_path" in keywords):
            yield node


def test_every_checkpoint_load_in_the_package_passes_weights_only_true():
    """A guard for new code: every load of a checkpoint in the package and train.py says weights_only=True."""
    loads, unsafe = 0, []
    for path in [*sorted((REPO / "upt_lightning").rglob("*.py")), REPO / "train.py"]:
        for call in checkpoint_loads(ast.parse(path.read_text())):
            loads += 1
            if not any(k.arg == "weights_only" and ast.unparse(k.value) == "True" for k in call.keywords):
                unsafe.append(f"{path.relative_to(REPO)}:{call.lineno}: {ast.unparse(call)}")
    assert loads >= 5  # the checkpoint readers, the latent cache, stage-2 loading, both stages' resume
    assert not unsafe, "loads without weights_only=True:\n" + "\n".join(unsafe)
