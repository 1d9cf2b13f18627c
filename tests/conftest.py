"""Fixtures shared across test folders."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """Bit-identical CPU reruns need a fixed thread count: torch runs on one thread inside the
    test and gets its own count back after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
