"""The one place that imports neuraloperator, lazily: only where an FNO or a GINO is built.

Importing ``neuralop`` costs about a second (it pulls in wandb, tensorly and scipy) and, in version 2.0,
adds a global ``warnings.filterwarnings("once", category=UserWarning)`` at import time. That filter would
sit in front of this library's own filters (Lightning's advice on ``sync_dist``, the frozen-module notice)
and print those warnings again, so the import runs inside ``warnings.catch_warnings``, which puts the
process's filters back afterwards.
"""

from __future__ import annotations

import warnings

import torch

from upt_lightning.errors import ConfigError

INSTALL_HINT = 'pip install -e ".[baselines]"'


def segment_csr(src: torch.Tensor, indptr: torch.Tensor, reduction: str, use_scatter: bool = True) -> torch.Tensor:
    """Sum or mean of ``src``'s rows (``[b,] n_reps, c``) over the CSR segments ``indptr`` (``[b,] n_out + 1``,
    shared by the batch): ``neuralop.layers.segment_csr.segment_csr`` without torch_scatter, vectorised.

    neuraloperator's own fallback loops over the segments in Python, one slice per output point, and its backward
    fills a zero tensor per slice: about 13x slower for one GINO training step on 3,000 points. Same values
    (tests/baselines/test_gino_module.py compares the two)."""
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    batched = src.ndim == 3
    ptr = indptr[0] if indptr.ndim == 2 else indptr
    counts = ptr[1:] - ptr[:-1]
    dim = 1 if batched else 0
    segment = torch.repeat_interleave(torch.arange(counts.shape[0], device=src.device), counts)
    values = src.narrow(dim, int(ptr[0]), segment.shape[0])
    shape = list(src.shape)
    shape[dim] = counts.shape[0]
    out = torch.zeros(shape, device=src.device, dtype=src.dtype).index_add(dim, segment, values)
    if reduction == "mean":
        size = [1] * src.ndim
        size[dim] = counts.shape[0]
        out = out / counts.clamp(min=1).to(src.dtype).view(size)
    return out


def require_gino() -> type:
    """The class ``neuralop.models.GINO`` with its neighbour reduction vectorised (:func:`segment_csr`);
    ConfigError with the install command when neuraloperator cannot be imported."""
    require_neuralop()
    with warnings.catch_warnings():
        import neuralop.layers.integral_transform as integral_transform
        from neuralop.models import GINO
    # GINO is built with gno_use_torch_scatter=False, so this is the reduction its graph operators call.
    integral_transform.segment_csr = segment_csr
    return GINO


def require_neuralop() -> type:
    """The class ``neuralop.models.FNO``; ConfigError with the install command when it cannot be imported."""
    try:
        with warnings.catch_warnings():
            from neuralop.models import FNO
    except ImportError as error:
        raise ConfigError(
            f"the baselines (model.kind=fno, gino) need the neuraloperator package, which cannot be imported "
            f"({error}); install the baselines extra: {INSTALL_HINT}"
        ) from None
    return FNO
