"""Ranks on one CPU node share `runtime.num_threads` instead of each claiming them all."""

import os
import warnings

import pytest
import torch

from metafgnet.distributed.context import DistContext
from metafgnet.params import RuntimeParams
from metafgnet.training.runtime import threads_per_process

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def _dist(ranks: int) -> DistContext:
    return DistContext(rank=0, world_size=ranks, local_rank=0, local_world_size=ranks,
                       backend="gloo", device=CPU)


def test_one_process_keeps_its_threads():
    assert threads_per_process(RuntimeParams(num_threads=2), CPU) == 2
    assert threads_per_process(RuntimeParams(num_threads=0), CPU, _dist(2)) == 0


def test_cpu_ranks_split_the_threads_at_least_one_each():
    cores = len(os.sched_getaffinity(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert threads_per_process(RuntimeParams(num_threads=8), CPU, _dist(2)) == 4
        assert threads_per_process(RuntimeParams(num_threads=2), CPU, _dist(4)) == 1
    # GPU ranks keep their CPU threads for the input pipeline
    assert threads_per_process(RuntimeParams(num_threads=2), CUDA, _dist(2)) == 2
    # more ranks than cores: said, not silent
    with pytest.warns(RuntimeWarning, match="oversubscribe"):
        threads_per_process(RuntimeParams(num_threads=1), CPU, _dist(cores + 1))
