"""The baseline tests reuse the entry tests' helpers (tiny overrides, the train.py runner)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "entry"))
