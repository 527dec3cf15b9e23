"""The one place that imports neuraloperator, lazily: only where an FNO is built.

Importing ``neuralop`` costs about a second (it pulls in wandb, tensorly and scipy) and, in version 2.0,
adds a global ``warnings.filterwarnings("once", category=UserWarning)`` at import time. That filter would
sit in front of this library's own filters (Lightning's advice on ``sync_dist``, the frozen-module notice)
and print those warnings again, so the import runs inside ``warnings.catch_warnings``, which puts the
process's filters back afterwards.
"""

from __future__ import annotations

import warnings

from upt_lightning.errors import ConfigError

INSTALL_HINT = 'pip install -e ".[baselines]"'


def require_neuralop() -> type:
    """The class ``neuralop.models.FNO``; ConfigError with the install command when it cannot be imported."""
    try:
        with warnings.catch_warnings():
            from neuralop.models import FNO
    except ImportError as error:
        raise ConfigError(
            f"model.kind=fno (the FNO baseline) needs the neuraloperator package, which cannot be imported "
            f"({error}); install the baselines extra: {INSTALL_HINT}"
        ) from None
    return FNO
