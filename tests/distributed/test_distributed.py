"""Data-parallel meta-training on a REAL process group: two CPU processes, gloo, torchrun.

One ``torchrun --nproc_per_node 2`` launch (``dist_worker.py``) computes everything; the
references are computed here, in one process, float64, one thread:

- sharding: each rank's items of a global batch are its slices of ``T_i`` and ``T_j``, and the
  union over ranks is the single-process batch of the same seed;
- micro-batches (``micro_batch``) inside each rank's shard are those of one process;
- the averaged meta-gradient WITH BatchNorm equals an independent autograd unroll of the
  data-parallel objective ``mean_r L(T_j^r; θ − η·mean_r ∇L(T_i^r; θ))`` (per-shard batch
  statistics), and WITHOUT BatchNorm equals the single-process meta-gradient of the union;
- a short meta-training: without BatchNorm the same weights as the single-process run; with
  BatchNorm bit-identical to its single-process equivalent, the ranks emulated by threads of
  this process running the same loop (``_helpers.EmulatedRank``), and identical on both ranks;
- SIGTERM to one rank stops every rank after the same step with a checkpoint, and the rerun
  ends bit-identical to the uninterrupted distributed run;
- fine-tuning with sharded validation; sharded evaluation and selection scoring.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from distributed._helpers import (
    KS,
    KT,
    bn_model,
    images,
    plain_model,
    run_emulated,
    states_equal,
    strip_timing,
    torchrun,
)
from distributed.settings import ETA, GRAD_SEED, META, PLAIN_OPTIM, SEED, datasets
from metafgnet.evaluation import evaluate
from metafgnet.meta import batch_loss, meta_gradients
from metafgnet.params import MetaParams, OptimParams
from metafgnet.selection import score_auxiliary
from metafgnet.training import LoopRuntime, finetune, meta_train, target_pairs
from metafgnet.training.batches import EpochPlan

# starts processes, servers or torchrun: `make test-fast` leaves it out
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

CPU = torch.device("cpu")
WORKER = Path(__file__).with_name("dist_worker.py")
TIGHT = dict(rtol=1e-10, atol=1e-12)  # float64, different summation orders


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Run the worker once under torchrun; load what it saved."""
    out = tmp_path_factory.mktemp("dist")
    proc = torchrun(WORKER, str(out))
    assert proc.returncode == 0, f"torchrun failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    assert "received SIGTERM" in proc.stderr  # the stop request really was a signal
    return {p.stem: torch.load(p, weights_only=False) for p in out.glob("*.pt")}


def test_ranks_hold_disjoint_slices_whose_union_is_the_single_process_batch(results):
    b = META["batch_size"]
    plan = EpochPlan(16, 2 * b, seed=7)
    for k in range(3):
        whole = plan.batch(k)
        r0, r1 = results["shards-rank0"][k], results["shards-rank1"][k]
        half = b // 2
        assert r0 == whole[:half] + whole[b:b + half]  # T_i^0, T_j^0
        assert r1 == whole[half:b] + whole[b + half:]  # T_i^1, T_j^1


def _shards(batch, world=2):
    x, y = batch
    n = x.shape[0] // world
    return [(x[r * n:(r + 1) * n], y[r * n:(r + 1) * n]) for r in range(world)]


def _data_parallel_reference(net, t_i, t_j, eta):
    """Autograd through θ' = θ − η·mean_r ∇L(T_i^r; θ), loss mean_r L(T_j^r; θ'), BN per shard."""
    named = dict(net.named_parameters())
    theta = {n: p.detach().clone().requires_grad_(True) for n, p in named.items()}
    buffers = lambda: {n: b.clone() for n, b in net.named_buffers()}  # noqa: E731
    inner = [torch.autograd.grad(batch_loss(net, theta, buffers(), s), list(theta.values()),
                                 create_graph=True) for s in _shards(t_i)]
    g = [sum(parts) / len(inner) for parts in zip(*inner, strict=True)]
    theta_p = {n: p - eta * gk for (n, p), gk in zip(theta.items(), g, strict=True)}
    outer = sum(batch_loss(net, theta_p, buffers(), s) for s in _shards(t_j)) / 2
    return dict(zip(theta, torch.autograd.grad(outer, list(theta.values())), strict=True))


def _first_pair():
    tds, _, _ = datasets()
    return next(target_pairs(tds, META["batch_size"], seed=GRAD_SEED))


def test_meta_gradient_with_batchnorm_is_that_of_the_data_parallel_objective(results):
    t_i, t_j = _first_pair()
    net = bn_model().target_net()
    ref = _data_parallel_reference(net, t_i, t_j, ETA)
    got = results["grad-bn"]
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], **TIGHT, msg=name)
    # meaningful: the BN ghost batches and the shared inner step both matter
    full = meta_gradients(net, t_i, t_j, ETA, order="second")
    independent = [meta_gradients(net, a, b, ETA, order="second")
                   for a, b in zip(_shards(t_i), _shards(t_j), strict=True)]
    mean_independent = {n: (independent[0][n] + independent[1][n]) / 2 for n in ref}
    for other in (full, mean_independent):
        assert max((got[n] - other[n]).abs().max().item() for n in ref) > 1e-6


def test_meta_gradient_without_batchnorm_equals_the_single_process_union(results):
    t_i, t_j = _first_pair()
    net = plain_model().target_net()
    ref = meta_gradients(net, t_i, t_j, ETA, order="second")
    for name, g in results["grad-plain"].items():
        torch.testing.assert_close(g, ref[name], **TIGHT, msg=name)


@pytest.mark.parametrize("build", [bn_model, plain_model], ids=["bn", "plain"])
def test_micro_batches_within_each_rank_are_those_of_one_process(results, build):
    """Micro-batches of 1 image inside each rank's shard are the single-process micro-batches of
    the union (equal shards): the same ghost-batch meta-gradient, with or without BatchNorm."""
    t_i, t_j = _first_pair()
    net = build().target_net()
    ref = meta_gradients(net, t_i, t_j, ETA, order="second", micro_batch=1)
    name = "bn" if build is bn_model else "plain"
    got = results[f"grad-{name}-micro"]
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], **TIGHT, msg=n)
    if build is bn_model:  # 1-image ghost batches are another objective than 2-image shards
        assert max((got[n] - results["grad-bn"][n]).abs().max().item() for n in ref) > 1e-6


def test_meta_training_without_batchnorm_matches_one_process(results):
    tds, ads, _ = datasets()
    model = plain_model()
    rows = meta_train(model, tds, ads, MetaParams(**META), LoopRuntime(device=CPU, seed=SEED))
    ranks = [results[f"meta-plain-rank{r}"] for r in range(2)]
    assert states_equal(ranks[0]["state"], ranks[1]["state"]) == []
    for name, value in model.state_dict().items():
        torch.testing.assert_close(ranks[0]["state"][name], value, **TIGHT, msg=name)
    for got, want in zip(ranks[0]["rows"], rows, strict=True):
        for key in ("inner_loss", "meta_loss", "aux_loss", "meta_grad_norm", "aux_grad_norm"):
            assert got[key] == pytest.approx(want[key], rel=1e-10), key


def test_meta_training_with_batchnorm_is_bit_identical_to_emulated_ranks(results):
    """The single-process equivalent of W ranks: W threads of one process, each running the
    same loop on its shard, exchanging tensors in memory (rank-order sum / W, as gloo)."""
    tds, ads, _ = datasets()
    # built here, not in the threads: the global RNG is shared, so concurrent initialisation
    # would interleave its draws and give each run different weights
    models = [bn_model() for _ in range(2)]

    def rank(ctx):
        model = models[ctx.rank]
        rows = meta_train(model, tds, ads, MetaParams(**META),
                          LoopRuntime(device=CPU, seed=SEED, dist=ctx))
        return model.state_dict(), rows

    emulated = run_emulated(2, rank)
    ranks = [results[f"meta-bn-rank{r}"] for r in range(2)]
    assert states_equal(ranks[0]["state"], ranks[1]["state"]) == []  # buffers averaged too
    assert states_equal(ranks[0]["state"], emulated[0][0]) == []
    assert strip_timing(ranks[0]["rows"]) == strip_timing(emulated[0][1])
    init = bn_model().state_dict()
    assert states_equal(ranks[0]["state"], init)  # it did train


def test_sigterm_to_one_rank_stops_all_after_the_same_step_and_resumes_exactly(results):
    for r in range(2):
        resumed = results[f"resumed-rank{r}"]
        assert resumed["stopped_at"] == 3  # signal during step 1: stop agreed at step 2
        assert states_equal(resumed["state"], results["meta-bn-rank0"]["state"]) == []
        assert strip_timing(resumed["rows"]) == strip_timing(results["meta-bn-rank0"]["rows"])


def test_finetune_with_sharded_validation_matches_one_process(results):
    tds, _, vds = datasets()
    model = plain_model()
    fit = finetune(model, tds, vds, OptimParams(**PLAIN_OPTIM), LoopRuntime(device=CPU, seed=SEED))
    got = results["finetune"]
    for name, value in model.state_dict().items():
        torch.testing.assert_close(got["state"][name], value, **TIGHT, msg=name)
    assert got["best_epoch"] == fit.best_epoch
    assert [r["val_top1"] for r in got["curves"]] == [r["val_top1"] for r in fit.curves]
    for a, b in zip(got["curves"], fit.curves, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-10)


def test_sharded_inference_gathers_in_dataset_order(results):
    model = bn_model()
    ref = evaluate(model, images(11, KT, 9), device=CPU, batch_size=4)
    got = results["inference"]["evaluate"]
    assert (got["predictions"] == ref["predictions"]).all()
    assert (got["labels"] == ref["labels"]).all()
    assert got["top1"] == ref["top1"] and got["num_samples"] == 11
    assert (got["confusion"] == ref["confusion"]).all()
    scores = score_auxiliary(model, images(11, KS, 10), device=CPU, batch_size=4)
    torch.testing.assert_close(results["inference"]["scores"], scores, rtol=1e-12, atol=1e-12)
