"""The cost figures of a training loop: median window times and peak memory growth."""

import math

import pytest
import torch

from metafgnet.training.cost import PeakMemory, loop_cost


def _release_freed_heap() -> None:
    """Give memory that earlier tests freed back to the system (glibc keeps it resident), so the
    buffer below must grow the resident set instead of reusing it."""
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    if hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def test_peak_memory_sees_a_buffer_freed_inside_the_block():
    _release_freed_heap()
    with PeakMemory(torch.device("cpu")) as small:
        pass
    with PeakMemory(torch.device("cpu")) as big:
        buffer = torch.ones(64 * 2**20 // 4)      # 64 MiB of float32, touched
        del buffer
    assert big.kind == "rss_growth"
    assert big.mib >= 60, big.mib                  # freed before the block ends, still counted
    assert small.mib < big.mib


def test_loop_cost_takes_medians_of_the_logged_windows():
    rows = [{"seconds_per_step": 5.0, "images_per_s": 10.0},   # warm-up window
            {"seconds_per_step": 1.0, "images_per_s": 48.0},
            {"seconds_per_step": 1.2, "images_per_s": 40.0},
            {"step": 3}]
    mem = PeakMemory(torch.device("cpu"))
    mem.mib = 12.34
    cost = loop_cost(rows, mem)
    assert cost == {"seconds_per_iter": 1.2, "images_per_s": 40.0, "peak_memory_mib": 12.3,
                    "memory": "rss_growth"}
    assert math.isnan(loop_cost([], mem)["seconds_per_iter"])


@pytest.mark.cuda
def test_peak_memory_on_cuda_is_max_allocated():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    device = torch.device("cuda")
    with PeakMemory(device) as mem:
        x = torch.empty(32 * 2**20 // 4, device=device)
        del x
    assert mem.kind == "cuda_max_allocated" and mem.mib >= 32
