"""What every stage process does around its body, before any heavy import: logging, the params
file, the audit of what it reads and writes, and how it ends on an error.

:func:`metafgnet.stages.context.open_stage` (every stage that trains, scores or reports) is
built on :func:`stage_shell`; the opt-in ``tune`` stage uses the shell alone, so that with
``tune.enabled: false`` it stays cheap (no torch, data or tracking import).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from metafgnet.errors import Interrupted, UserError
from metafgnet.params import Params, load_params
from metafgnet.stages import audit
from metafgnet.stages.failure import debugging, fail

log = logging.getLogger("metafgnet")


def params_path() -> Path:
    """The params file every stage reads: ``$METAFGNET_PARAMS``, default ``params.yaml``."""
    return Path(os.environ.get("METAFGNET_PARAMS", "params.yaml"))


def _configure_logging() -> None:
    stream = sys.stderr
    fmt = "%(message)s" if stream.isatty() else "%(asctime)s %(levelname)s %(message)s"
    logging.basicConfig(level=logging.INFO, format=fmt, stream=stream, force=True)


@contextlib.contextmanager
def stage_shell(name: str, sections: Sequence[str]) -> Iterator[Params]:
    """Yield the validated params of stage ``name``, which declares ``sections`` in ``dvc.yaml``.

    On success rank 0 writes the stage's audit record (:mod:`metafgnet.stages.audit`). An
    :class:`~metafgnet.errors.Interrupted` exits with its code (143 for SIGTERM); a
    :class:`~metafgnet.errors.UserError` ends the process with one block and exit 2
    (:func:`metafgnet.stages.failure.fail`; ``METAFGNET_DEBUG=1`` keeps the traceback).
    """
    audit.start()
    _configure_logging()
    try:
        yield load_params(params_path())
        if int(os.environ.get("RANK", "0")) == 0:
            audit.finish(name, list(sections))
    except Interrupted as exc:
        log.warning("%s interrupted: %s", name, exc)
        sys.exit(exc.exit_code)
    except UserError as exc:
        if debugging():
            raise
        fail(name, exc)
