"""A tiny meta-training in its own process, for the SIGKILL / SIGTERM tests.

    python ckpt_worker.py CHECKPOINT_DIR OUT_FILE [--every N] [--sleep S]

Prints ``step <s>`` after every step (flushed) and sleeps ``S`` seconds there, so the test can
signal it mid-training. On success saves the final state and curves to OUT_FILE. On SIGTERM it
exits with the code :class:`~metafgnet.training.TrainingInterrupted` carries (143), as a stage
should.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from distributed._helpers import bn_model  # noqa: E402
from distributed.settings import SEED, datasets  # noqa: E402
from metafgnet.params import MetaParams  # noqa: E402
from metafgnet.training import LoopRuntime, TrainingInterrupted, meta_train  # noqa: E402

ITERATIONS = 12
META = dict(iterations=ITERATIONS, batch_size=4, aux_batch_size=4, log_every=1, order="second",
            milestones=[6], inner_lr=0.1)


def run(checkpoint_dir: Path | None, every: int, on_step=None):
    torch.set_num_threads(1)
    tds, ads, _ = datasets()
    model = bn_model()
    rows = meta_train(model, tds, ads, MetaParams(**META),
                      LoopRuntime(device=torch.device("cpu"), seed=SEED,
                                  checkpoint_dir=checkpoint_dir, checkpoint_every=every),
                      on_step=on_step)
    return model, rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint_dir", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--every", type=int, default=2)
    ap.add_argument("--sleep", type=float, default=0.0)
    args = ap.parse_args()

    def report(step, row):
        print(f"step {step}", flush=True)
        time.sleep(args.sleep)

    try:
        model, rows = run(args.checkpoint_dir, args.every, report)
    except TrainingInterrupted as exc:
        print(exc, file=sys.stderr, flush=True)
        sys.exit(exc.exit_code)
    torch.save({"state": model.state_dict(), "rows": rows}, args.out)


if __name__ == "__main__":
    main()
