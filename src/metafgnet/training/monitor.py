"""What a training loop reports and when it must stop (stop on a non-finite loss).

Two pieces shared by every loop:

- :func:`fetch_finite` pulls a step's scalars (losses, gradient norms) to the host in ONE
  device sync and raises :class:`NonFiniteError` naming the step and the term when one of them
  is NaN or infinite; per-parameter gradients are only inspected, to name the culprit, once
  their global norm is already known to be non-finite.
- :class:`WindowMean` averages logged values over the steps since the previous log row, so a
  value logged as a mean is one (docs/method.md, "Where the reproduction departs": the
  authors logged single iterations labelled as averages).
"""

from __future__ import annotations

import math
import time

import torch

from metafgnet.errors import UserError


class NonFiniteError(FloatingPointError, UserError):
    """A loss or gradient became NaN/inf; ``step`` and ``term`` say where."""

    def __init__(self, step: int, term: str, value: float, where: str = "step"):
        self.step, self.term, self.value = step, term, value
        super().__init__(
            f"non-finite {term} ({value}) at {where} {step}; training stopped before the "
            "update. Lower the learning rates (or inner_lr), check the inputs for NaN/inf, "
            "or resume from an earlier checkpoint."
        )


def grad_norm(grads: dict[str, torch.Tensor]) -> torch.Tensor:
    """Global L2 norm of a name -> gradient mapping, as a 0-dim tensor (no host sync)."""
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(g.detach().float()) for g in grads.values()]))


def fetch_finite(
    step: int,
    scalars: dict[str, torch.Tensor],
    grads: dict[str, dict[str, torch.Tensor]] | None = None,
    where: str = "step",
) -> dict[str, float]:
    """Host values of ``scalars`` after checking that all are finite.

    ``scalars`` are checked in order; a key that is a gradient norm (``<key>_norm`` for a
    ``grads`` entry ``<key>``, e.g. ``meta_gradient_norm`` for ``grads["meta_gradient"]``) is
    reported as ``<key>[<first bad parameter name>]``.
    """
    names = list(scalars)
    device = scalars[names[0]].device  # stack where the values live: one transfer, one sync
    values = torch.stack(
        [scalars[n].detach().float().reshape(()).to(device) for n in names]).tolist()
    out = dict(zip(names, values, strict=True))
    for name, value in out.items():
        if math.isfinite(value):
            continue
        key = name.removesuffix("_norm")
        if grads and key in grads:
            bad = next((n for n, g in grads[key].items() if not torch.isfinite(g).all()), None)
            raise NonFiniteError(step, f"{key}[{bad}]", value, where)
        raise NonFiniteError(step, name, value, where)
    return out


# Columns of a logged row that time the run rather than describe its result: they go to the
# tracker and to the uncached metrics files, never into a cached output (whose hash must not
# change from one run to the next).
TIMING = ("seconds_per_step", "images_per_s")


def without_timing(row: dict) -> dict:
    """``row`` without the :data:`TIMING` columns."""
    return {k: v for k, v in row.items() if k not in TIMING}


class WindowMean:
    """Running means of named values and throughput over one logging window."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, float] = {}
        self.steps = 0  # steps whose values are in ``sums``
        self.timed_steps = 0  # steps run since ``started`` (fewer after a resume)
        self.images = 0  # images of the timed steps
        self.started = time.perf_counter()

    def state_dict(self) -> dict:
        """The partial window for a checkpoint: value sums and their step count. Timing is not
        kept: a resumed window times only the steps run after the resume."""
        return {"sums": dict(self.sums), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.reset()
        self.sums, self.steps = dict(state["sums"]), int(state["steps"])

    def add(self, values: dict[str, float], images: int) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.steps += 1
        self.timed_steps += 1
        self.images += images

    def summary(self) -> dict[str, float]:
        """Means over the window plus ``window_steps``, ``seconds_per_step``, ``images_per_s``;
        then starts a new window."""
        seconds = time.perf_counter() - self.started
        n = max(self.steps, 1)
        row = {k: v / n for k, v in self.sums.items()}
        row["window_steps"] = self.steps
        row["seconds_per_step"] = seconds / max(self.timed_steps, 1)
        row["images_per_s"] = self.images / seconds if seconds > 0 else float("nan")
        self.reset()
        return row
