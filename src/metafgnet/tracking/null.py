"""The recorder of a stage run that records nothing (``tracking.enabled: false``, or a rank
other than the main one): :meth:`metafgnet.tracking.runs.StageRun.null`."""

from __future__ import annotations

from metafgnet.tracking.recorder import operations


def _nothing(*args, **kwargs) -> None:
    return None


class NullRecorder:
    """Every :class:`~metafgnet.tracking.recorder.Recorder` operation, doing nothing and
    returning None."""

    def __getattr__(self, op: str):
        if op != "pid" and op not in operations():
            raise AttributeError(op)
        return _nothing
