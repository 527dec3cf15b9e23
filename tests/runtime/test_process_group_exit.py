"""A process with a gloo group destroys it at exit, before the interpreter finalises (ddp_spawn workers)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# The probe's own atexit handler is registered first, so it runs last (atexit is LIFO): it sees
# whether the group is still alive after every later-registered handler ran.
PROBE = textwrap.dedent(
    """
    import atexit, sys, tempfile
    import torch.distributed as dist
    atexit.register(lambda: print("alive at exit" if dist.is_initialized() else "destroyed at exit", flush=True))
    store = dist.FileStore(tempfile.mktemp(), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    if sys.argv[1] == "hook":
        from upt_lightning.runtime.process_group import destroy_process_group_at_exit
        assert destroy_process_group_at_exit() and destroy_process_group_at_exit()  # once, idempotent
    elif sys.argv[1] == "module":
        import lightning.pytorch as pl
        from upt_lightning.modules import AutoencoderModule
        module = AutoencoderModule(field_channels={"u": 1}, coord_dim=1, grid_shape=(8,),
                                   encoder={"kind": "grid", "patch_size": 4}, latent_tokens=2, latent_dim=8)
        module.setup("fit")
    """
)


def _probe(mode: str) -> str:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("mode", ["hook", "module"])
def test_the_group_is_destroyed_before_the_interpreter_finalises(mode):
    assert _probe(mode) == "destroyed at exit"


def test_without_the_hook_the_group_outlives_the_atexit_handlers():
    # The probe can tell the difference: the same process without the hook still holds its group.
    assert _probe("none") == "alive at exit"
