"""Shared fixtures: where the real puzzle data lives, and an isolated dataset cache per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
