"""How a stage ends on a problem the user can fix: one block on stderr, no traceback.

Errors derived from :class:`metafgnet.errors.UserError` carry messages that say what is wrong,
where, and the fix (a params key and its allowed values, a data file, an unreachable tracking
server, ...). A traceback in front of them only hides the message, so a stage prints the
message alone, once, and exits 2. Under the package's own launcher
(:mod:`metafgnet.distributed.run`, what ``runtime.nproc > 1`` starts) every failing rank hands
its message to the launcher in torchrun's error file, and the launcher prints the first one;
under a ``torchrun`` started by hand rank 0 prints it. ``METAFGNET_DEBUG=1`` lets the exception
propagate with its traceback. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import NoReturn

from metafgnet.errors import EXIT_CODE, QUIET_LAUNCH_ENV


def debugging() -> bool:
    return os.environ.get("METAFGNET_DEBUG", "") not in ("", "0")


def fail(stage: str, exc: BaseException) -> NoReturn:
    """Report ``exc`` as one block, once (module docstring), and exit :data:`EXIT_CODE`."""
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    block = "\n".join(f"  {line}" for line in lines)
    message = (f"error: stage '{stage}' stopped ({type(exc).__name__}):\n{block}\n"
               "  (METAFGNET_DEBUG=1 shows the traceback)")
    error_file = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if error_file and os.environ.get(QUIET_LAUNCH_ENV):
        with open(error_file, "w") as fh:  # torchrun's error-file format
            json.dump({"message": message, "timestamp": int(time.time())}, fh)
    elif int(os.environ.get("RANK", "0")) == 0:
        print(message, file=sys.stderr, flush=True)
    sys.exit(EXIT_CODE)
