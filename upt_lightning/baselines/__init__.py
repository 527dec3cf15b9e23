"""Baselines trained and evaluated like UPT, for comparisons on equal data, metrics and time.

``FNOModule``: a stock Fourier Neural Operator (``neuralop.models.FNO``, the ``baselines`` extra:
``pip install -e ".[baselines]"``). Importing this package does not import neuraloperator; building
an FNO does.
"""

from upt_lightning.baselines.fno import FNOModule
from upt_lightning.baselines.neuralop_import import require_neuralop

__all__ = ["FNOModule", "require_neuralop"]
