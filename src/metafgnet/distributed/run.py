"""torchrun (``torch.distributed.run``), quiet about known problems: the launcher of
:func:`metafgnet.distributed.relaunch_under_torchrun`.

When the first rank to fail stopped on a known problem (exit status
:data:`metafgnet.errors.EXIT_CODE`; its message arrives in torchrun's error file, see
:mod:`metafgnet.stages.failure`), this prints that message once and exits with that status,
without torchrun's own traceback, failure report and the log lines about the failed and the
stopped ranks. Any other failure keeps torchrun's full report. A module of its
own, not imported by :mod:`metafgnet.distributed`, so ``python -m`` runs it cleanly.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from metafgnet.errors import EXIT_CODE, QUIET_LAUNCH_ENV


class _KnownFailure(logging.Filter):
    """Drop torchrun's lines about a rank that exited with :data:`EXIT_CODE` and about the
    ranks it then stops."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return f"(exitcode: {EXIT_CODE})" not in message and "closing signal" not in message


def main(argv: Sequence[str] | None = None) -> int:
    """torchrun, quiet about ranks that stopped on a known problem (module docstring)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    # the ranks set their own thread counts (metafgnet.training.runtime): no banner about it
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ[QUIET_LAUNCH_ENV] = "1"  # inherited by the ranks
    logging.getLogger("torch.distributed.elastic.multiprocessing.api").addFilter(_KnownFailure())
    try:
        run(parse_args(list(sys.argv[1:] if argv is None else argv)))
    except ChildFailedError as exc:
        _, first = exc.get_first_failure()
        if first.exitcode != EXIT_CODE:
            raise
        print(first.message, file=sys.stderr, flush=True)
        return EXIT_CODE
    return 0


if __name__ == "__main__":
    sys.exit(main())
