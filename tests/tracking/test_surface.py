"""The tracking API's parts cannot drift apart: every Recorder call a stage may make is
dispatched by the agent, and every StageRun method has its no-op twin in NullRun."""

import inspect

from metafgnet.tracking.agent import OPS
from metafgnet.tracking.null import NullRun
from metafgnet.tracking.recorder import Recorder
from metafgnet.tracking.runs import StageRun


def _public_methods(cls) -> set[str]:
    return {name for name, member in inspect.getmembers(cls, inspect.isfunction)
            if not name.startswith("_")}


def test_the_agent_dispatches_exactly_the_recorder_calls():
    internal = {"abandon"}  # the agent calls it itself when a stage's connection drops
    assert (_public_methods(Recorder) - internal) | {"pid"} == OPS


def test_null_run_mirrors_every_stage_run_method():
    missing = _public_methods(StageRun) - _public_methods(NullRun)
    assert not missing, f"NullRun lacks {sorted(missing)}: non-main ranks would fail there"
    for name in _public_methods(StageRun):
        ours = list(inspect.signature(getattr(StageRun, name)).parameters)
        twin = list(inspect.signature(getattr(NullRun, name)).parameters)
        assert ours == twin, f"{name}: {ours} != {twin}"
