"""How a stage ends on a problem the user can fix: one block on stderr, no traceback.

Errors derived from :class:`metafgnet.errors.UserError` carry messages that say what is wrong,
where, and the fix (a params key and its allowed values, a data file, an unreachable tracking
server, ...). A traceback in front of them only hides the message, so a stage prints the
message alone, once (rank 0 under ``torchrun``), and exits 2. ``METAFGNET_DEBUG=1`` lets the
exception propagate with its traceback. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

EXIT_CODE = 2


def debugging() -> bool:
    return os.environ.get("METAFGNET_DEBUG", "") not in ("", "0")


def fail(stage: str, exc: BaseException) -> NoReturn:
    """Print ``exc`` as one block (on rank 0 only) and exit :data:`EXIT_CODE`."""
    if int(os.environ.get("RANK", "0")) == 0:
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        block = "\n".join(f"  {line}" for line in lines)
        print(f"error: stage '{stage}' stopped ({type(exc).__name__}):\n{block}\n"
              "  (METAFGNET_DEBUG=1 shows the traceback)", file=sys.stderr, flush=True)
    sys.exit(EXIT_CODE)
