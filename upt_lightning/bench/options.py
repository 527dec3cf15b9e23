"""Settings shared by every benchmark of one ``python -m upt_lightning.bench`` call."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class BenchOptions:
    """``quick``: smallest sizes and fewest repeats (CI); ``device``: where models run;
    ``out_dir``: JSON results, plus ``out_dir/work`` for generated data and checkpoints."""

    quick: bool = False
    device: torch.device = torch.device("cpu")
    out_dir: Path = Path("bench_results")

    @property
    def work_dir(self) -> Path:
        return self.out_dir / "work"

    def pick(self, quick_value, full_value):
        """The quick or the full variant of a setting."""
        return quick_value if self.quick else full_value
