"""What the entry points print of Lightning: each record once, without its advertisements.

Lightning prints through its own stderr handler on the ``lightning`` logger and lets records
propagate as well, so under Hydra (whose handlers on the root logger write the console and the
run's ``train.log``) every Lightning line appeared twice, in two formats. It also logs tips that
advertise its cloud products, and with torch >= 2.10 it warns about its own use of torch's
deprecated ``LeafSpec``: neither is anything our user can act on.
"""

from __future__ import annotations

import logging
import warnings

_ADVERTISEMENT = "💡 Tip:"


class _DropAdvertisements(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_ADVERTISEMENT)


def quiet_lightning() -> None:
    """Drop Lightning's tips and its ``LeafSpec`` deprecation warning. Idempotent; every process
    (spawned DDP workers too) calls it, as the entry points do at import."""
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")  # where rank_zero_info logs
    if not any(isinstance(f, _DropAdvertisements) for f in rank_zero.filters):
        rank_zero.addFilter(_DropAdvertisements())
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


def lightning_logs_through_root() -> None:
    """When the root logger has handlers (Hydra configured the console and ``train.log``), print
    Lightning's records only there: drop the plain stderr handler that ``import lightning`` adds."""
    root = logging.getLogger()
    if not root.handlers:
        return
    import lightning  # noqa: F401  (adds the handler on first import: remove it after)

    package = logging.getLogger("lightning")
    for handler in list(package.handlers):
        if type(handler) is logging.StreamHandler:
            package.removeHandler(handler)
