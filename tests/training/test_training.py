"""Training loops: meta-iteration semantics, determinism, schedules, failure modes.

Tiny models on random 8 px TensorDatasets; every loop runs a handful of steps on CPU.
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.utils.data import Dataset, TensorDataset

import metafgnet.training.meta_loop as meta_loop
import metafgnet.training.plain as plain_module
from metafgnet.models import MetaFGNet, build_model
from metafgnet.params import JointParams, MetaParams, ModelParams, OptimParams, RuntimeParams
from metafgnet.training import (
    LoopRuntime,
    NonFiniteError,
    build_meta_optimizer,
    derive_seed,
    finetune,
    joint_train,
    make_autocast,
    meta_step,
    meta_train,
    pretrain,
    seed_everything,
    setup_runtime,
    target_pairs,
)
from metafgnet.training.batches import BatchStream

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")
KT, KS = 3, 5  # target / source classes


def _images(n, k, seed, size=8):
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 3, size, size, generator=g), torch.arange(n) % k)


def _resnet(seed=0):
    torch.manual_seed(seed)
    return build_model(ModelParams(width=4), KT, KS)


def _meta(**kw):
    base = dict(iterations=3, batch_size=4, aux_batch_size=4, log_every=1, order="second")
    return MetaParams(**{**base, **kw})


def _assert_same_state(a: nn.Module, b: nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


# --------------------------------------------------------------------------- determinism


def test_meta_train_rerun_gives_identical_weights():
    tds, ads = _images(16, KT, 1), _images(16, KS, 2)
    models = [_resnet(), _resnet()]
    init = copy.deepcopy(models[0])
    for m in models:
        meta_train(m, tds, ads, _meta(), LoopRuntime(device=CPU, seed=7))
    _assert_same_state(*models)
    assert not torch.equal(models[0].backbone.stem[0].weight, init.backbone.stem[0].weight)
    other = _resnet()
    meta_train(other, tds, ads, _meta(), LoopRuntime(device=CPU, seed=8))
    assert not torch.equal(other.target_head.weight, models[0].target_head.weight)


def test_meta_train_uses_micro_batches_when_set():
    """With BatchNorm, micro-batches are ghost batches: other weights; one micro-batch holding
    the whole batch is the full-batch path, bit for bit."""
    tds, ads = _images(16, KT, 1), _images(16, KS, 2)
    runs = {}
    for micro_batch in (0, 2, 4):
        runs[micro_batch] = _resnet()
        rows = meta_train(runs[micro_batch], tds, ads, _meta(micro_batch=micro_batch),
                          LoopRuntime(device=CPU, seed=7))
        assert len(rows) == 3
    _assert_same_state(runs[0], runs[4])
    assert not torch.equal(runs[0].backbone.stem[0].weight, runs[2].backbone.stem[0].weight)


def test_meta_step_is_the_iteration_meta_train_runs():
    """One ``meta_step`` on the first batches reproduces a one-step ``meta_train`` exactly."""
    tds, ads = _images(16, KT, 1), _images(16, KS, 2)
    meta = _meta(iterations=1)
    trained, stepped = _resnet(), _resnet()
    meta_train(trained, tds, ads, meta, LoopRuntime(device=CPU, seed=3))
    seed_everything(3)
    batches = _first_batches(tds, ads, meta, seed=3)
    values, stop = meta_step(stepped.train(), build_meta_optimizer(stepped, meta), batches,
                             meta.inner_lr, meta)
    _assert_same_state(trained, stepped)
    assert set(values) >= {"inner_loss", "meta_loss", "aux_loss", "target_acc"} and not stop


def test_finetune_rerun_gives_identical_weights():
    tds, vds = _images(16, KT, 1), _images(8, KT, 3)
    opt = OptimParams(epochs=2, batch_size=4)
    models = [_resnet(), _resnet()]
    fits = [finetune(m, tds, vds, opt, LoopRuntime(device=CPU, seed=3)) for m in models]
    _assert_same_state(*models)
    for k, v in fits[0].best_state.items():
        assert torch.equal(v, fits[1].best_state[k]), k


# ------------------------------------------------------- the outer update, by hand


class LinearBackbone(nn.Module):
    def __init__(self, d_in, d_out):
        super().__init__()
        self.fc = nn.Linear(d_in, d_out)
        self.feature_dim = d_out

    def forward(self, x):
        return self.fc(x)


def _linear_model():
    torch.manual_seed(0)
    return MetaFGNet(LinearBackbone(4, 3), KT, KS).double()


def _vectors(n, k, seed):
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 4, generator=g, dtype=torch.float64), torch.arange(n) % k)


def _first_batches(tds, ads, meta, seed):
    """T_i, T_j, S of step 0, drawn with the loop's own seeded streams."""
    t_i, t_j = next(target_pairs(tds, meta.batch_size, seed=derive_seed(seed, "target")))
    s = next(BatchStream(ads, meta.aux_batch_size, seed=derive_seed(seed, "aux")).endless())
    return t_i, t_j, s


def _hand_gradients(model, t_i, t_j, s, eta, order):
    """Meta-gradient by autograd through the unrolled inner step; aux gradient at θ."""
    params = dict(model.named_parameters())
    tnames = [n for n in params if not n.startswith("source_head")]
    theta = {n: params[n].detach().clone().requires_grad_(True) for n in tnames}
    tnet = model.target_net()
    inner = F.cross_entropy(functional_call(tnet, theta, (t_i[0],)), t_i[1])
    g = torch.autograd.grad(inner, list(theta.values()), create_graph=order == "second")
    theta_p = {n: p - eta * gk for (n, p), gk in zip(theta.items(), g, strict=True)}
    if order == "first":
        theta_p = {n: p.detach().requires_grad_(True) for n, p in theta_p.items()}
    outer = F.cross_entropy(functional_call(tnet, theta_p, (t_j[0],)), t_j[1])
    wrt = list(theta.values()) if order == "second" else list(theta_p.values())
    meta = dict(zip(tnames, torch.autograd.grad(outer, wrt), strict=True))
    snames = [n for n in params if not n.startswith("target_head")]
    sp = {n: params[n].detach().clone().requires_grad_(True) for n in snames}
    aux_loss = F.cross_entropy(functional_call(model.source_net(), sp, (s[0],)), s[1])
    aux = dict(zip(snames, torch.autograd.grad(aux_loss, list(sp.values())), strict=True))
    return meta, aux


def _lr_of(name, meta):
    group = name.split(".")[0]
    return {"backbone": meta.backbone_lr, "target_head": meta.target_head_lr,
            "source_head": meta.source_head_lr}[group]


@pytest.mark.parametrize("micro_batch", [0, 1], ids=["full", "micro"])  # no BatchNorm: equal
@pytest.mark.parametrize("order", ["second", "first"])
def test_sequential_and_summed_match_hand_computed_sgd(order, micro_batch):
    tds, ads = _vectors(8, KT, 1), _vectors(8, KS, 2)
    kw = dict(iterations=1, batch_size=2, aux_batch_size=3, inner_lr=0.3, backbone_lr=0.05,
              target_head_lr=0.2, source_head_lr=0.1, momentum=0.9, weight_decay=0.1,
              aux_weight=0.5, order=order, micro_batch=micro_batch)
    init = _linear_model()
    t_i, t_j, s = _first_batches(tds, ads, MetaParams(**kw), seed=5)
    g_meta, g_aux = _hand_gradients(init, t_i, t_j, s, eta=0.3, order=order)
    zero = {n: torch.zeros_like(p) for n, p in init.named_parameters()}
    g1 = {**zero, **g_meta}
    g2 = {**zero, **{n: 0.5 * g for n, g in g_aux.items()}}
    results = {}
    for update in ("sequential", "summed"):
        meta = MetaParams(**kw, update=update)
        model = copy.deepcopy(init)
        meta_train(model, tds, ads, meta, LoopRuntime(device=CPU, seed=5))
        results[update] = dict(model.named_parameters())
        for n, p in init.named_parameters():
            p, lr = p.detach(), _lr_of(n, meta)
            if update == "sequential":  # two SGD steps, momentum carried, decay applied twice
                buf = g1[n] + 0.1 * p
                p1 = p - lr * buf
                buf = 0.9 * buf + g2[n] + 0.1 * p1
                expected = p1 - lr * buf
            else:  # one step on the sum
                expected = p - lr * (g1[n] + g2[n] + 0.1 * p)
            torch.testing.assert_close(results[update][n].detach(), expected, rtol=0, atol=1e-12)
    assert not torch.allclose(results["sequential"]["backbone.fc.weight"],
                              results["summed"]["backbone.fc.weight"])


# ------------------------------------------------------------------ batches


class IndexLabels(Dataset):
    """Label = index, so the labels of a batch say exactly which images it holds."""

    def __init__(self, n):
        self.x = torch.randn(n, 3, 8, 8)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], i


def test_inner_and_outer_batches_are_disjoint_halves_of_one_stream(monkeypatch):
    n, b = 12, 2  # 3 pair-batches per epoch: 7 steps cross two epoch restarts
    seen = []
    real = meta_loop.meta_gradients

    def recording(net, inner, outer, *args, **kwargs):
        seen.append((inner[1].tolist(), outer[1].tolist()))
        return real(net, inner, outer, *args, **kwargs)

    monkeypatch.setattr(meta_loop, "meta_gradients", recording)
    torch.manual_seed(0)
    model = build_model(ModelParams(width=4), n, KS)
    meta_train(model, IndexLabels(n), _images(8, KS, 2), _meta(iterations=7, batch_size=b),
               LoopRuntime(device=CPU, seed=0))
    assert len(seen) == 7
    for t_i, t_j in seen:
        assert len(t_i) == len(t_j) == b
        assert not set(t_i) & set(t_j)
    epochs = [sum((i + j for i, j in seen[e * 3:(e + 1) * 3]), []) for e in range(2)]
    assert sorted(epochs[0]) == sorted(epochs[1]) == list(range(n))  # one loader, restarted
    assert epochs[0] != epochs[1]  # reshuffled


# ------------------------------------------------------------ running statistics


def _bn_buffers(model):
    return {k: v.clone() for k, v in model.state_dict().items()
            if "running" in k or "num_batches" in k}


@pytest.mark.parametrize("policy,passes", [
    ("extra_forward", ["t_j", "s"]),
    ("inner_pass", ["t_i", "s"]),
    ("auxiliary_only", ["s"]),
])
def test_running_stats_policy(policy, passes):
    tds, ads = _images(16, KT, 1), _images(16, KS, 2)
    meta = _meta(iterations=1, running_stats=policy)
    init = _resnet()
    model = copy.deepcopy(init)
    meta_train(model, tds, ads, meta, LoopRuntime(device=CPU, seed=4))
    # expected: exactly the documented train-mode passes, in order, all at the initial θ
    t_i, t_j, s = _first_batches(tds, ads, meta, seed=4)
    ref = copy.deepcopy(init).train()
    with torch.no_grad():
        for p in passes:
            {"t_i": lambda: ref.target_net()(t_i[0]), "t_j": lambda: ref.target_net()(t_j[0]),
             "s": lambda: ref.source_net()(s[0])}[p]()
    got, want = _bn_buffers(model), _bn_buffers(ref)
    assert got["backbone.stem.1.num_batches_tracked"] == len(passes)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=1e-6, msg=k)


# ------------------------------------------------------------- schedule


def test_milestones_decay_group_lrs_and_inner_lr_together():
    rows = meta_train(_resnet(), _images(16, KT, 1), _images(16, KS, 2),
                      _meta(iterations=99, milestones=[50], lr_decay=0.5),
                      LoopRuntime(device=CPU, seed=0), iterations=5,
                      milestones=[2, 4])  # arguments win
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]
    factors = [1, 1, 0.5, 0.5, 0.25]
    meta = _meta()
    for r, f in zip(rows, factors, strict=True):
        assert r["lr_backbone"] == pytest.approx(meta.backbone_lr * f)
        assert r["lr_target_head"] == pytest.approx(meta.target_head_lr * f)
        assert r["lr_source_head"] == pytest.approx(meta.source_head_lr * f)
        assert r["inner_lr"] == pytest.approx(meta.inner_lr * f)
        assert r["window_steps"] == 1


def test_log_rows_are_window_means():
    rows = meta_train(_resnet(), _images(16, KT, 1), _images(16, KS, 2),
                      _meta(iterations=5, log_every=2), LoopRuntime(device=CPU, seed=0))
    assert [r["step"] for r in rows] == [1, 3, 4]  # every 2 steps and the last
    assert [r["window_steps"] for r in rows] == [2, 2, 1]
    for key in ("inner_loss", "meta_loss", "aux_loss", "target_acc", "meta_grad_norm",
                "seconds_per_step", "images_per_s"):
        assert rows[0][key] >= 0


# ------------------------------------------------------------- non-finite


def test_nan_input_stops_at_step_zero_naming_the_term_before_any_update():
    bad = _images(16, KT, 1)
    bad.tensors[0][:] = float("nan")
    model = _resnet()
    before = copy.deepcopy(model)
    with pytest.raises(NonFiniteError, match=r"non-finite inner_loss .* at step 0") as info:
        meta_train(model, bad, _images(16, KS, 2), _meta(), LoopRuntime(device=CPU, seed=0))
    assert (info.value.step, info.value.term) == (0, "inner_loss")
    for (n, p), q in zip(model.named_parameters(), before.parameters(), strict=True):
        assert torch.equal(p, q), n
    aux_bad = _images(16, KS, 2)
    aux_bad.tensors[0][:] = float("inf")
    with pytest.raises(NonFiniteError, match="non-finite aux_loss"):
        meta_train(_resnet(), _images(16, KT, 1), aux_bad, _meta(), LoopRuntime(device=CPU, seed=0))


def test_non_finite_meta_gradient_names_the_parameter(monkeypatch):
    real = meta_loop.meta_gradients

    def poisoned(*args, **kwargs):
        out = real(*args, **kwargs)
        out.grads["target_head.bias"][0] = float("nan")
        return out

    monkeypatch.setattr(meta_loop, "meta_gradients", poisoned)
    with pytest.raises(NonFiniteError, match=r"meta_gradient\[target_head\.bias\]"):
        meta_train(_resnet(), _images(16, KT, 1), _images(16, KS, 2), _meta(),
                   LoopRuntime(device=CPU, seed=0))


def test_exploding_learning_rate_raises_with_step_and_term():
    with pytest.raises(NonFiniteError) as info:
        meta_train(_resnet(), _images(16, KT, 1), _images(16, KS, 2),
                   _meta(iterations=30, target_head_lr=1e30, backbone_lr=1e30, momentum=0.0),
                   LoopRuntime(device=CPU, seed=0))
    assert info.value.step > 0
    assert info.value.term.startswith(("inner_loss", "meta_loss", "aux_loss", "meta_gradient[",
                                       "aux_gradient["))


def test_plain_loop_stops_on_nan_loss():
    bad = _images(16, KT, 1)
    bad.tensors[0][:] = float("nan")
    with pytest.raises(NonFiniteError, match="non-finite loss .* at epoch 0, step 0"):
        finetune(_resnet(), bad, _images(8, KT, 3), OptimParams(epochs=1, batch_size=4),
                 LoopRuntime(device=CPU, seed=0))


# ------------------------------------------------------------- plain training


def test_finetune_resets_head_and_keeps_best_validation_epoch(monkeypatch):
    model = _resnet()
    old_head = model.target_head
    with torch.no_grad():
        old_head.weight.fill_(100.0)
    source_before = copy.deepcopy(model.source_head)
    scripted = iter([0.2, 0.9, 0.9, 0.5])  # best at epoch 1; the later tie does not win
    monkeypatch.setattr(plain_module, "evaluate",
                        lambda *a, **k: {"top1": next(scripted), "mean_class_acc": 0.0})
    snapshots = []
    opt = OptimParams(epochs=4, batch_size=4, milestones=[2], lr_decay=0.1)
    fit = finetune(model, _images(16, KT, 1), _images(8, KT, 3), opt,
                   LoopRuntime(device=CPU, seed=0),
                   on_epoch=lambda e, row: snapshots.append(copy.deepcopy(model.state_dict())))
    assert model.target_head is not old_head
    assert model.target_head.weight.abs().max() < 10  # fresh init, not the sentinel 100
    assert torch.equal(model.source_head.weight, source_before.weight)  # not trained
    assert (fit.best_epoch, fit.best_val_top1) == (1, 0.9)
    for k, v in snapshots[1].items():
        assert torch.equal(fit.best_state[k], v), k
        assert torch.equal(model.state_dict()[k], v), k  # restored
    assert [r["lr_target_head"] for r in fit.curves] == pytest.approx([0.1, 0.1, 0.01, 0.01])
    assert [r["val_top1"] for r in fit.curves] == [0.2, 0.9, 0.9, 0.5]


def test_pretrain_trains_backbone_and_source_head_only():
    model = _resnet()
    before = copy.deepcopy(model)
    curves = pretrain(model, _images(16, KS, 2), OptimParams(epochs=2, batch_size=4),
                      LoopRuntime(device=CPU, seed=0))
    assert [r["epoch"] for r in curves] == [0, 1]
    assert {"loss", "train_acc", "lr_backbone", "lr_source_head"} <= curves[0].keys()
    assert torch.equal(model.target_head.weight, before.target_head.weight)
    assert not torch.equal(model.source_head.weight, before.source_head.weight)
    assert not torch.equal(model.backbone.stem[0].weight, before.backbone.stem[0].weight)


def test_joint_train_logs_both_terms_and_picks_best():
    model = _resnet()
    fit = joint_train(model, _images(16, KT, 1), _images(16, KS, 2),
                      JointParams(epochs=2, batch_size=4, aux_weight=0.5),
                      LoopRuntime(device=CPU, seed=0), val_ds=_images(8, KT, 3))
    row = fit.curves[-1]
    assert row["loss"] == pytest.approx(row["target_loss"] + 0.5 * row["aux_loss"], rel=1e-6)
    assert fit.best_epoch in (0, 1) and 0 <= fit.best_val_top1 <= 1
    no_val = joint_train(_resnet(), _images(16, KT, 1), _images(16, KS, 2),
                         JointParams(epochs=1, batch_size=4), LoopRuntime(device=CPU, seed=0))
    assert (no_val.best_epoch, no_val.best_val_top1) == (0, None)


# ------------------------------------------------------------- runtime


def test_setup_runtime_pins_threads_seeds_and_picks_cpu():
    saved = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
             torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    try:
        device = setup_runtime(RuntimeParams(device="cpu", num_threads=1, deterministic=True,
                                             cudnn_benchmark=True), seed=11)
        assert device == CPU
        assert torch.get_num_threads() == 1
        assert torch.are_deterministic_algorithms_enabled()
        assert not torch.backends.cudnn.benchmark  # deterministic wins over benchmark
        a = torch.rand(3)
        setup_runtime(RuntimeParams(device="cpu", num_threads=1), seed=11)
        assert torch.equal(a, torch.rand(3))
        ctx = make_autocast(RuntimeParams(amp=True), CPU)
        with ctx():
            assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
        if not torch.cuda.is_available():
            with pytest.raises(RuntimeError, match="no CUDA device"):
                setup_runtime(RuntimeParams(device="cuda"), seed=0)
    finally:
        torch.set_num_threads(saved[0])
        torch.use_deterministic_algorithms(saved[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[2:]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_meta_train_on_cuda_with_bf16_autocast_and_deterministic_runtime():
    saved = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark,
             torch.backends.cudnn.deterministic)
    try:
        runtime = RuntimeParams(device="cuda", amp=True, deterministic=True, num_threads=0)
        device = setup_runtime(runtime, seed=0)
        model = _resnet().to(device)
        rows = meta_train(model, _images(16, KT, 1), _images(16, KS, 2), _meta(iterations=2),
                          LoopRuntime(device=device, seed=0,
                                      autocast=make_autocast(runtime, device)))
        assert all(torch.isfinite(torch.tensor(r["meta_loss"])) for r in rows)
        assert next(model.parameters()).device.type == "cuda"
    finally:
        torch.use_deterministic_algorithms(saved[0])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[1:]


class _PidRecording(Dataset):
    """Items of ``base``; every load appends the loading process's pid to ``log``."""

    def __init__(self, base: Dataset, log):
        self.base, self.log = base, log

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        import os

        with open(self.log, "a") as fh:
            fh.write(f"{os.getpid()}\n")
        return self.base[i]


@pytest.mark.slow  # starts loader worker processes
@pytest.mark.parametrize("loop", ["finetune", "joint"])
def test_loader_workers_persist_across_epochs(loop, tmp_path):
    """One loader per run: its worker starts once, not once per epoch, and the results are
    those of loading in the main process."""
    log = tmp_path / "pids"
    train = _PidRecording(_images(16, KT, 0), log)
    aux = _images(16, KS, 1)
    optim = OptimParams(epochs=3, batch_size=4, milestones=[2])

    def fit(workers):
        model = _resnet()
        kwargs = {"num_workers": workers, "prefetch_factor": 2} if workers else {}
        if loop == "finetune":
            fit = finetune(model, train, _images(6, KT, 2), optim,
                           LoopRuntime(device=CPU, seed=0, loader_kwargs=kwargs))
        else:
            fit = joint_train(model, train, aux, JointParams(epochs=3, batch_size=4),
                              LoopRuntime(device=CPU, seed=0, loader_kwargs=kwargs),
                              val_ds=_images(6, KT, 2))
        return fit.best_state

    in_main = fit(0)
    log.unlink()
    with_worker = fit(1)
    pids = set(log.read_text().split())
    assert len(pids) == 1, f"{len(pids)} worker processes loaded the 3 epochs"
    for key, value in in_main.items():
        torch.testing.assert_close(with_worker[key], value, rtol=0, atol=0)
