"""keep_freed_memory: the large CPU tensors of a repeated forward pass are served from the kept heap instead of
being faulted in anew on every pass.

Counted in page faults (deterministic), not timed. Each case runs in a fresh process: the setting is per process
and cannot be undone.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"

# Six passes of a decoder-like block on (16, 4096, 128) float32 activations (32 MiB each, the size of the default
# decoder's full-grid activations); the minor page faults of each pass.
CODE = """
import json, resource, sys, torch
from upt_lightning.runtime.allocator import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
torch.manual_seed(0)
x, w = torch.randn(16, 4096, 128), torch.randn(128, 128)
faults = []
for _ in range(6):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    y = torch.nn.functional.layer_norm(torch.nn.functional.gelu(x @ w) + x, (128,))
    total = float(y.sum())
    del y
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"applied": applied, "again": keep_freed_memory() == applied, "faults": faults, "total": total}))
"""


def _run(mode: str) -> dict:
    done = subprocess.run([sys.executable, "-c", CODE, mode], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="the setting concerns glibc's malloc")
def test_kept_memory_is_reused_without_page_faults():
    default, kept = _run("default"), _run("keep")
    assert kept["applied"] is True and kept["again"] is True
    pages_of_one_activation = 16 * 4096 * 128 * 4 // 4096
    # glibc's default maps blocks this large anew on every pass: their pages fault in again each time.
    assert all(count >= pages_of_one_activation for count in default["faults"][3:]), default
    # Kept: once the heap has grown to the pass's peak, later passes reuse it (a few pages of bookkeeping at most).
    assert all(count < 0.01 * pages_of_one_activation for count in kept["faults"][3:]), kept
    # The same numbers either way.
    assert kept["total"] == default["total"]
