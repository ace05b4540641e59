import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
EMPS = SHARED / "data" / "emps"

os.environ.setdefault("MPLBACKEND", "Agg")


def pytest_configure(config):
    try:
        import torch

        torch.set_num_threads(1)  # tests are small; avoids OpenMP stalls on a busy machine
    except ImportError:
        pass


@pytest.fixture
def emps_dir():
    if not EMPS.exists():
        pytest.skip(f"EMPS not found at {EMPS}")
    return EMPS


@pytest.fixture
def server():
    """A threaded HTTP server on 127.0.0.1 replaying registered responses and faults."""
    from replay_server import ReplayServer

    with ReplayServer() as srv:
        yield srv
