"""Shared fixtures: where the real puzzle data lives, and an isolated dataset cache per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# One OpenMP thread per process: tests run a trainer subprocess beside the test process on 2 cores,
# and two processes of 2 threads each make small steps 20-40x slower. Set before torch is imported.
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the checkout; absent on a user's clone, so tests using it skip."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real puzzle data not available: {SHARED_DATA} is absent (only in the team's workspace)")
    return SHARED_DATA


@pytest.fixture(scope="session", autouse=True)
def _isolated_dataset_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Datasets built by tests go to a per-session cache, never to the user's ~/.cache."""
    cache = tmp_path_factory.mktemp("hrm-data-cache")
    os.environ["HRM_DATA_CACHE"] = str(cache)
    return cache


@pytest.fixture
def one_torch_thread():
    """Tiny shapes: a second OpenMP thread only adds barrier waits on a shared 2-core machine."""
    import torch  # here, not at the top: the app's tests never load torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
