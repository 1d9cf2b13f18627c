"""Fixtures shared across test folders."""

import contextlib

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


@pytest.fixture(scope="session")
def postgres():
    """A throw-away PostgreSQL cluster (support.postgres), started once for the session; skips
    with the reason where PostgreSQL is not installed or does not start here."""
    from support import postgres as pg

    reason = pg.unavailable()
    if reason:
        pytest.skip(reason)
    with contextlib.ExitStack() as stack:
        try:
            found = stack.enter_context(pg.cluster())
        except RuntimeError as exc:
            pytest.skip(f"PostgreSQL did not start: {str(exc)[:2000]}")
        yield found
