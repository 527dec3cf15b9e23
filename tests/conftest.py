"""Shared test settings: small thread pools (CI has 2 cores) and fixed seeds."""

import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    yield
