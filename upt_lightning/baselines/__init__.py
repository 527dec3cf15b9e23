"""Baselines trained and evaluated like UPT, for comparisons on equal data, metrics and time.

``FNOModule``: a stock Fourier Neural Operator (``neuralop.models.FNO``) for grid data; ``GINOModule``: a stock
Geometry-Informed Neural Operator (``neuralop.models.GINO``) for any points, meshes included. Both need the
``baselines`` extra (``pip install -e ".[baselines]"``); importing this package does not import neuraloperator,
building a model does.
"""

from upt_lightning.baselines.fno import FNOModule
from upt_lightning.baselines.gino import GINOModule
from upt_lightning.baselines.neuralop_import import require_neuralop

__all__ = ["FNOModule", "GINOModule", "require_neuralop"]
