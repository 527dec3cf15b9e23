"""Shared test settings: fixed seeds, and one torch thread per process (tiny models lose more to
thread hand-offs than they gain, and CI has 2 cores)."""

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    yield
