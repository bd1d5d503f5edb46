"""Optimizers and LR schedulers against torch.optim, step by step.

Every optimizer gets the same float32 parameters and the same sequence of random
gradients as its torch counterpart; after every step the parameters must agree to
max relative error 1e-5 (||ours - torch||_inf / ||torch||_inf, float64 comparison).
"""
import math

import numpy as np
import pytest

import tinygrad_k as tk
from tinygrad_k import optim
from tinygrad_k.optim import lr_scheduler

torch = pytest.importorskip("torch")

SHAPES = [(5, 3), (7,), (2, 3, 4)]
STEPS = 12


def _params(seed):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(np.float32) for s in SHAPES]


def _grads(seed, steps=STEPS):
    rng = np.random.default_rng(seed + 1000)
    return [[rng.standard_normal(s).astype(np.float32) for s in SHAPES] for _ in range(steps)]


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30)


def _run_pair(ours_cls, torch_cls, kwargs, seed=0, steps=STEPS, tol=1e-5):
    init = _params(seed)
    grads = _grads(seed, steps)
    ours = [tk.tensor(a.copy(), requires_grad=True) for a in init]
    theirs = [torch.tensor(a.copy(), requires_grad=True) for a in init]
    o, t = ours_cls(ours, **kwargs), torch_cls(theirs, **kwargs)
    for k, gs in enumerate(grads):
        for p, q, g in zip(ours, theirs, gs):
            p.grad = tk.tensor(g.copy())
            q.grad = torch.tensor(g.copy())
        o.step()
        t.step()
        for p, q in zip(ours, theirs):
            err = _rel(p.numpy(), q.detach().numpy())
            assert err < tol, f"{ours_cls.__name__}{kwargs} step {k}: rel err {err:.3g}"
    return o, t, ours, theirs


CASES = [
    (optim.SGD, torch.optim.SGD, dict(lr=0.1)),
    (optim.SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9)),
    (optim.SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=1e-2)),
    (optim.SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=5e-3)),
    (optim.Adam, torch.optim.Adam, dict(lr=1e-2)),
    (optim.Adam, torch.optim.Adam, dict(lr=3e-3, betas=(0.8, 0.99), eps=1e-6,
                                        weight_decay=0.1)),
    (optim.Adam, torch.optim.Adam, dict(lr=1e-2, amsgrad=False, weight_decay=1e-2)),
    (optim.Adam, torch.optim.Adam, dict(lr=1e-2, amsgrad=True, weight_decay=1e-2)),
    (optim.AdamW, torch.optim.AdamW, dict(lr=1e-2)),
    (optim.AdamW, torch.optim.AdamW, dict(lr=1e-2, amsgrad=True, weight_decay=0.1)),
    (optim.AdamW, torch.optim.AdamW, dict(lr=5e-3, betas=(0.85, 0.98), weight_decay=0.3)),
    (optim.Adagrad, torch.optim.Adagrad, dict(lr=0.1)),
    (optim.Adagrad, torch.optim.Adagrad, dict(lr=0.1, lr_decay=0.05, weight_decay=1e-2,
                                              initial_accumulator_value=0.1)),
    (optim.RMSprop, torch.optim.RMSprop, dict(lr=1e-2)),
    (optim.RMSprop, torch.optim.RMSprop, dict(lr=1e-2, alpha=0.9, momentum=0.5,
                                              weight_decay=1e-2)),
    (optim.RMSprop, torch.optim.RMSprop, dict(lr=5e-3, centered=True, momentum=0.3)),
    (optim.Adadelta, torch.optim.Adadelta, dict()),
    (optim.Adadelta, torch.optim.Adadelta, dict(lr=0.5, rho=0.8, eps=1e-5, weight_decay=0.1)),
    (optim.Adadelta, torch.optim.Adadelta, dict(lr=1.0, maximize=True)),
    (optim.Adamax, torch.optim.Adamax, dict()),
    (optim.Adamax, torch.optim.Adamax, dict(lr=1e-2, betas=(0.8, 0.95), weight_decay=0.05)),
    (optim.NAdam, torch.optim.NAdam, dict()),
    (optim.NAdam, torch.optim.NAdam, dict(lr=1e-2, momentum_decay=1e-2, weight_decay=0.05)),
    (optim.NAdam, torch.optim.NAdam, dict(lr=1e-2, weight_decay=0.1,
                                          decoupled_weight_decay=True)),
    (optim.RAdam, torch.optim.RAdam, dict()),
    (optim.RAdam, torch.optim.RAdam, dict(lr=1e-2, betas=(0.7, 0.9), weight_decay=0.05)),
    (optim.RAdam, torch.optim.RAdam, dict(lr=1e-2, weight_decay=0.1,
                                          decoupled_weight_decay=True, maximize=True)),
]


@pytest.mark.parametrize("ours_cls,torch_cls,kwargs", CASES,
                         ids=[f"{c[0].__name__}-{i}" for i, c in enumerate(CASES)])
def test_matches_torch_step_by_step(ours_cls, torch_cls, kwargs):
    _run_pair(ours_cls, torch_cls, kwargs, seed=len(kwargs))


def test_param_groups_and_skipped_params():
    """Per-group hyperparameters; a parameter whose grad is None is left alone (torch)."""
    init = _params(3)
    ours = [tk.tensor(a.copy(), requires_grad=True) for a in init]
    theirs = [torch.tensor(a.copy(), requires_grad=True) for a in init]
    o = optim.SGD([{"params": ours[:2]}, {"params": ours[2:], "lr": 0.5}], lr=0.1,
                  momentum=0.9)
    t = torch.optim.SGD([{"params": theirs[:2]}, {"params": theirs[2:], "lr": 0.5}], lr=0.1,
                        momentum=0.9)
    for k, gs in enumerate(_grads(3, 6)):
        for i, (p, q, g) in enumerate(zip(ours, theirs, gs)):
            skip = i == 1 and k % 2 == 0
            p.grad = None if skip else tk.tensor(g.copy())
            q.grad = None if skip else torch.tensor(g.copy())
        o.step()
        t.step()
        for p, q in zip(ours, theirs):
            assert _rel(p.numpy(), q.detach().numpy()) < 1e-5
    assert o.param_groups[1]["lr"] == 0.5 and o.param_groups[0]["lr"] == 0.1


@pytest.mark.parametrize("momentum,nesterov", [(0.9, False), (0.9, True), (0.0, False)])
def test_sgd_on_the_gpu_updates_each_group_in_one_launch(monkeypatch, momentum, nesterov):
    """On the cuda device SGD hands each group's parameters (same first-step state) to one
    backend call, which the GPU runs as one launch (kernels.cuda.sgd_update_multi; here
    the real GPU backend's method over the simulator, a strided gradient falling back to
    the per-tensor step): same steps as torch, groups and skipped parameters included."""
    from tinygrad_k import backend as B

    monkeypatch.setattr(B.CUDASimBackend, "sgd_update_many_", B.CUDABackend.sgd_update_many_)
    calls = []
    multi = B.get_backend("cuda").kernels.sgd_update_multi
    monkeypatch.setattr(B.get_backend("cuda").kernels, "sgd_update_multi",
                        lambda ps, *a: calls.append(len(ps)) or multi(ps, *a))
    init = _params(3) + [np.arange(6, dtype=np.float32).reshape(2, 3)]
    ours = [tk.tensor(a.copy(), requires_grad=True, device="cuda") for a in init]
    theirs = [torch.tensor(a.copy(), requires_grad=True) for a in init]
    kw = dict(lr=0.1, momentum=momentum, nesterov=nesterov, weight_decay=0.01)
    o = optim.SGD([{"params": ours[:2] + ours[3:]}, {"params": ours[2:3], "lr": 0.5}], **kw)
    t = torch.optim.SGD([{"params": theirs[:2] + theirs[3:]}, {"params": theirs[2:3],
                                                              "lr": 0.5}], **kw)
    for k, gs in enumerate(_grads(3, 4)):
        gs = gs + [np.ones((3, 2), np.float32).T * (k + 1)]  # a strided gradient
        for i, (p, q, g) in enumerate(zip(ours, theirs, gs)):
            skip = i == 1 and k % 2 == 0
            p.grad = None if skip else tk.tensor(np.ascontiguousarray(g), device="cuda")
            if i == 3 and not skip:
                p.grad._array = p.grad._array.T.copy().T  # same values, not C-contiguous
            q.grad = None if skip else torch.tensor(np.ascontiguousarray(g))
        o.step()
        t.step()
        for p, q in zip(ours, theirs):
            assert _rel(p.numpy(), q.detach().numpy()) < 1e-5
    # tensors per launch, step by step: group 0 holds params 0, 1 and 3 (3's gradient is
    # strided: the per-tensor step), group 1 param 2; param 1, skipped at steps 0 and 2,
    # takes its first momentum step at step 1, apart from the others
    if momentum:
        assert calls == [1, 1] + [1, 1, 1] + [1, 1] + [2, 1]
    else:
        assert calls == [1, 1] + [2, 1] + [1, 1] + [2, 1]


@pytest.mark.parametrize("cls,kwargs", [(optim.Adam, dict(lr=1e-2, weight_decay=0.1)),
                                        (optim.AdamW, dict(lr=1e-2)),
                                        (optim.Adam, dict(lr=1e-2, amsgrad=True))])
def test_adam_on_the_gpu_updates_each_group_in_one_launch(monkeypatch, cls, kwargs):
    """As for SGD: on the cuda device Adam / AdamW hand each group's parameters (same step
    count) to one backend call, one launch on a GPU (kernels.cuda.adam_update_multi, here
    through the GPU backend's method over the simulator); a strided gradient and AMSGrad
    take the per-tensor step. Same steps as torch."""
    from tinygrad_k import backend as B

    monkeypatch.setattr(B.CUDASimBackend, "adam_update_many_", B.CUDABackend.adam_update_many_)
    calls = []
    multi = B.get_backend("cuda").kernels.adam_update_multi
    monkeypatch.setattr(B.get_backend("cuda").kernels, "adam_update_multi",
                        lambda ps, *a: calls.append(len(ps)) or multi(ps, *a))
    init = _params(3)
    ours = [tk.tensor(a.copy(), requires_grad=True, device="cuda") for a in init]
    theirs = [torch.tensor(a.copy(), requires_grad=True) for a in init]
    o = cls([{"params": ours[:2]}, {"params": ours[2:], "lr": 5e-3}], **kwargs)
    t = getattr(torch.optim, cls.__name__)([{"params": theirs[:2]},
                                            {"params": theirs[2:], "lr": 5e-3}], **kwargs)
    for k, gs in enumerate(_grads(3, 4)):
        for i, (p, q, g) in enumerate(zip(ours, theirs, gs)):
            skip = i == 1 and k == 0
            p.grad = None if skip else tk.tensor(g.copy(), device="cuda")
            if i == 0 and k == 2:
                p.grad._array = p.grad._array.T.copy().T  # not C-contiguous: the fallback
            q.grad = None if skip else torch.tensor(g.copy())
        o.step()
        t.step()
        for p, q in zip(ours, theirs):
            assert _rel(p.numpy(), q.detach().numpy()) < 1e-5
    # param 1 starts a step behind param 0: its own call while their counts differ
    if kwargs.get("amsgrad"):
        assert calls == []
    else:
        assert calls == [1, 1] + [1, 1, 1] + [1, 1] + [1, 1, 1]


@pytest.mark.parametrize("cls,kwargs", [(optim.SGD, dict(lr=0.05, momentum=0.9,
                                                          nesterov=True)),
                                        (optim.Adam, dict(lr=1e-2)),
                                        (optim.AdamW, dict(lr=1e-2, weight_decay=0.1,
                                                           amsgrad=True)),
                                        (optim.Adagrad, dict(lr=0.1)),
                                        (optim.RMSprop, dict(lr=1e-2, momentum=0.5,
                                                             centered=True))])
def test_state_dict_resume_gives_identical_steps(cls, kwargs, tmp_path):
    """Run 5 steps, save params + optimizer state through tinygrad_k.save, load into a
    fresh optimizer: the next 5 steps are bit-identical to an uninterrupted run."""
    init, grads = _params(7), _grads(7, 10)
    full = [tk.tensor(a.copy(), requires_grad=True) for a in init]
    o_full = cls(full, **kwargs)
    part = [tk.tensor(a.copy(), requires_grad=True) for a in init]
    o_part = cls(part, **kwargs)
    for k, gs in enumerate(grads):
        for p, g in zip(full, gs):
            p.grad = tk.tensor(g.copy())
        o_full.step()
        if k < 5:
            for p, g in zip(part, gs):
                p.grad = tk.tensor(g.copy())
            o_part.step()
    path = tmp_path / "opt.npz"
    tk.save({"params": part, "optim": o_part.state_dict()}, path)
    ck = tk.load(path)
    resumed = [tk.tensor(t.numpy(), requires_grad=True) for t in ck["params"]]
    o_res = cls(resumed, **kwargs)
    o_res.load_state_dict(ck["optim"])
    for gs in grads[5:]:
        for p, g in zip(resumed, gs):
            p.grad = tk.tensor(g.copy())
        o_res.step()
    for p, q in zip(resumed, full):
        np.testing.assert_array_equal(p.numpy(), q.numpy())


def test_state_dict_layout_is_torchs():
    ours = [tk.tensor(a, requires_grad=True) for a in _params(1)]
    theirs = [torch.tensor(a, requires_grad=True) for a in _params(1)]
    o = optim.Adam([{"params": ours[:1]}, {"params": ours[1:], "lr": 1e-4}], lr=1e-3)
    t = torch.optim.Adam([{"params": theirs[:1]}, {"params": theirs[1:], "lr": 1e-4}], lr=1e-3)
    for p, q, g in zip(ours, theirs, _grads(1, 1)[0]):
        p.grad, q.grad = tk.tensor(g), torch.tensor(g)
    o.step()
    t.step()
    sd, tsd = o.state_dict(), t.state_dict()
    assert [g["params"] for g in sd["param_groups"]] == [g["params"] for g in
                                                         tsd["param_groups"]]
    assert sorted(sd["state"]) == sorted(tsd["state"])
    for i in sd["state"]:
        assert set(sd["state"][i]) == set(tsd["state"][i])
        assert int(sd["state"][i]["step"]) == int(tsd["state"][i]["step"])
        assert _rel(sd["state"][i]["exp_avg_sq"].numpy(),
                    tsd["state"][i]["exp_avg_sq"].numpy()) < 1e-6


def test_load_state_dict_mismatch_raises():
    o = optim.SGD([tk.tensor(a, requires_grad=True) for a in _params(0)], lr=0.1, momentum=0.9)
    other = optim.SGD([tk.tensor(np.zeros(3, np.float32), requires_grad=True)], lr=0.1)
    with pytest.raises(ValueError, match="parameter groups"):
        other.load_state_dict(o.state_dict())


def test_zero_grad():
    ps = [tk.tensor(a, requires_grad=True) for a in _params(0)]
    o = optim.SGD(ps, lr=0.1)
    for p in ps:
        p.grad = tk.ones_like(p)
    o.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.numpy().any() for p in ps)
    o.zero_grad()
    assert all(p.grad is None for p in ps)


def test_bad_arguments():
    p = tk.tensor(np.ones(3, np.float32), requires_grad=True)
    with pytest.raises(ValueError, match="empty"):
        optim.SGD([], lr=0.1)
    with pytest.raises(ValueError, match="nesterov"):
        optim.SGD([p], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="lr"):
        optim.SGD([p], lr=-1.0)
    with pytest.raises(ValueError, match="betas"):
        optim.Adam([p], betas=(1.0, 0.999))
    with pytest.raises(TypeError, match="Tensors"):
        optim.Adam([np.ones(3)])
    with pytest.raises(ValueError, match="require grad"):
        optim.Adam([tk.tensor(np.ones(3, np.float32))])
    with pytest.raises(ValueError, match="twice"):
        optim.Adam([p, p])


# -- schedulers ------------------------------------------------------------------------
def _sched_pair(make_ours, make_theirs, opt="sgd", steps=30, group_lrs=(0.1, 0.02)):
    ours_p = [tk.tensor(np.ones(2, np.float32), requires_grad=True) for _ in group_lrs]
    their_p = [torch.ones(2, requires_grad=True) for _ in group_lrs]
    if opt == "sgd":
        o = optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(ours_p, group_lrs)],
                      lr=0.1, momentum=0.9)
        t = torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(their_p, group_lrs)],
                            lr=0.1, momentum=0.9)
    else:
        o = optim.Adam([{"params": [p], "lr": lr} for p, lr in zip(ours_p, group_lrs)])
        t = torch.optim.Adam([{"params": [p], "lr": lr} for p, lr in zip(their_p, group_lrs)])
    so, st = make_ours(o), make_theirs(t)
    key = "momentum" if opt == "sgd" else "betas"
    for k in range(steps):
        np.testing.assert_allclose(so.get_last_lr(), st.get_last_lr(), rtol=1e-12, atol=1e-15,
                                   err_msg=f"lr at step {k}")
        for go, gt in zip(o.param_groups, t.param_groups):
            np.testing.assert_allclose(np.ravel(go[key]), np.ravel(gt[key]), rtol=1e-12,
                                       err_msg=f"{key} at step {k}")
        o.step()
        t.step()
        so.step()
        st.step()
    return so, st


def test_step_lr():
    _sched_pair(lambda o: lr_scheduler.StepLR(o, step_size=4, gamma=0.5),
                lambda t: torch.optim.lr_scheduler.StepLR(t, step_size=4, gamma=0.5))


def test_cosine_annealing_lr():
    _sched_pair(lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=10, eta_min=1e-3),
                lambda t: torch.optim.lr_scheduler.CosineAnnealingLR(t, T_max=10,
                                                                    eta_min=1e-3),
                steps=10)


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_one_cycle_lr(opt):
    _sched_pair(lambda o: lr_scheduler.OneCycleLR(o, max_lr=[0.5, 0.1], total_steps=40),
                lambda t: torch.optim.lr_scheduler.OneCycleLR(t, max_lr=[0.5, 0.1],
                                                              total_steps=40),
                opt=opt, steps=40)


def test_one_cycle_lr_options_and_overrun():
    so, _ = _sched_pair(
        lambda o: lr_scheduler.OneCycleLR(o, max_lr=0.3, epochs=3, steps_per_epoch=7,
                                          pct_start=0.25, div_factor=10,
                                          final_div_factor=100, cycle_momentum=False),
        lambda t: torch.optim.lr_scheduler.OneCycleLR(t, max_lr=0.3, epochs=3,
                                                      steps_per_epoch=7, pct_start=0.25,
                                                      div_factor=10, final_div_factor=100,
                                                      cycle_momentum=False),
        steps=21)
    with pytest.raises(ValueError, match="total_steps"):
        so.step()
    p = tk.tensor(np.ones(2, np.float32), requires_grad=True)
    with pytest.raises(ValueError, match="momentum"):
        lr_scheduler.OneCycleLR(optim.SGD([p], lr=0.1), max_lr=0.1, total_steps=5)


def test_scheduler_state_dict_resume():
    def make():
        p = tk.tensor(np.ones(2, np.float32), requires_grad=True)
        o = optim.SGD([p], lr=0.1, momentum=0.9)
        return o, lr_scheduler.OneCycleLR(o, max_lr=0.4, total_steps=20)

    o1, s1 = make()
    for _ in range(7):
        s1.step()
    o2, s2 = make()
    s2.load_state_dict(s1.state_dict())
    o2.load_state_dict(o1.state_dict())
    assert s2.last_epoch == 7
    for _ in range(5):
        s1.step()
        s2.step()
        assert s1.get_last_lr() == s2.get_last_lr()
        assert o1.param_groups[0]["momentum"] == o2.param_groups[0]["momentum"]
    assert math.isclose(s1.get_last_lr()[0], o1.param_groups[0]["lr"])


def test_multistep_exponential_and_lambda_lr():
    _sched_pair(lambda o: lr_scheduler.MultiStepLR(o, milestones=[7, 3, 12], gamma=0.3),
                lambda t: torch.optim.lr_scheduler.MultiStepLR(t, milestones=[7, 3, 12],
                                                               gamma=0.3))
    _sched_pair(lambda o: lr_scheduler.ExponentialLR(o, gamma=0.9),
                lambda t: torch.optim.lr_scheduler.ExponentialLR(t, gamma=0.9))
    fns = [lambda e: 1 / (1 + e), lambda e: 0.95 ** e]
    so, _ = _sched_pair(lambda o: lr_scheduler.LambdaLR(o, fns),
                        lambda t: torch.optim.lr_scheduler.LambdaLR(t, fns))
    assert "lr_lambdas" not in so.state_dict() and so.state_dict()["last_epoch"] == 30
    p = tk.tensor(np.ones(2, np.float32), requires_grad=True)
    with pytest.raises(ValueError, match="LambdaLR: 2 lr_lambdas for 1 parameter groups"):
        lr_scheduler.LambdaLR(optim.SGD([p], lr=0.1), fns)


@pytest.mark.parametrize("mode,threshold_mode,cooldown",
                         [("min", "rel", 0), ("min", "abs", 2), ("max", "rel", 1),
                          ("max", "abs", 0)])
def test_reduce_lr_on_plateau_matches_pytorch(mode, threshold_mode, cooldown):
    rng = np.random.default_rng(0)
    ours_p = tk.tensor(np.ones(2, np.float32), requires_grad=True)
    their_p = torch.ones(2, requires_grad=True)
    o, t = optim.SGD([ours_p], lr=0.1), torch.optim.SGD([their_p], lr=0.1)
    kw = dict(mode=mode, factor=0.5, patience=2, threshold=0.05, threshold_mode=threshold_mode,
              cooldown=cooldown, min_lr=0.004)
    so = lr_scheduler.ReduceLROnPlateau(o, **kw)
    st = torch.optim.lr_scheduler.ReduceLROnPlateau(t, **kw)
    # a metric that improves, stalls and wanders, so every rule takes effect
    metrics = np.concatenate([np.linspace(1.0, 0.5, 6), 0.5 + 0.03 * rng.standard_normal(30)])
    if mode == "max":
        metrics = -metrics
    lrs = []
    for m in metrics:
        so.step(m)
        st.step(m)
        assert so.get_last_lr() == pytest.approx(st.get_last_lr(), rel=1e-12)
        lrs.append(so.get_last_lr()[0])
    assert lrs[-1] < 0.1 and lrs[-1] >= 0.004  # it did reduce, and stopped at the floor
    resumed = lr_scheduler.ReduceLROnPlateau(o, **kw)
    resumed.load_state_dict(so.state_dict())
    assert "optimizer" not in so.state_dict()
    assert (resumed.best, resumed.num_bad_epochs, resumed.cooldown_counter) == (
        so.best, so.num_bad_epochs, so.cooldown_counter)


def test_new_optimizers_state_names_match_torch():
    for ours_cls, torch_cls in ((optim.Adadelta, torch.optim.Adadelta),
                                (optim.Adamax, torch.optim.Adamax),
                                (optim.NAdam, torch.optim.NAdam),
                                (optim.RAdam, torch.optim.RAdam)):
        o, t, _, _ = _run_pair(ours_cls, torch_cls, {}, steps=2)
        ours, theirs = o.state_dict(), t.state_dict()
        assert set(ours["state"][0]) == set(theirs["state"][0]), ours_cls.__name__
        assert set(ours["param_groups"][0]) <= set(theirs["param_groups"][0]) | {"params"}
        for k, v in theirs["param_groups"][0].items():
            if k in ours["param_groups"][0] and k != "params":
                assert ours["param_groups"][0][k] == v, (ours_cls.__name__, k)


def test_step_with_closure_returns_its_loss():
    p = tk.tensor(np.array([1.0, -2.0], np.float32), requires_grad=True)
    opt = optim.NAdam([p], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (p * p).sum()
        loss.backward()
        return loss

    assert opt.step(closure).item() == pytest.approx(5.0)
    assert p.grad is not None


def test_add_param_group_matches_torch():
    init = _params(3)
    grads = _grads(3, 6)
    ours = [tk.tensor(a.copy(), requires_grad=True) for a in init]
    theirs = [torch.tensor(a.copy(), requires_grad=True) for a in init]
    o = optim.Adam(ours[:1], lr=1e-2)
    t = torch.optim.Adam(theirs[:1], lr=1e-2)
    for k, gs in enumerate(grads):
        if k == 2:  # unfreeze the rest with its own lr, as a fine-tuning script does
            o.add_param_group({"params": ours[1:], "lr": 5e-2})
            t.add_param_group({"params": theirs[1:], "lr": 5e-2})
        for p, q, g in zip(ours, theirs, gs):
            p.grad, q.grad = tk.tensor(g.copy()), torch.tensor(g.copy())
        o.step()
        t.step()
        for p, q in zip(ours, theirs):
            assert _rel(p.numpy(), q.detach().numpy()) < 1e-5
    assert [g["lr"] for g in o.param_groups] == [g["lr"] for g in t.param_groups]
    assert o.param_groups[1]["betas"] == t.param_groups[1]["betas"]
    with pytest.raises(ValueError, match="more than one parameter group"):
        o.add_param_group({"params": [ours[0]]})
    with pytest.raises(ValueError):
        t.add_param_group({"params": [theirs[0]]})
    with pytest.raises(TypeError, match="expected a dict"):
        o.add_param_group([ours[0]])


def _rosenbrock_pair(line_search_fn, steps, **kwargs):
    """Rosenbrock-like sum plus a least-squares term: every step compared with torch, in
    float64: in float32 the two libraries' rounding (their reductions' order, which
    differs with the CPU's vector width) moves the strong-Wolfe trajectory by ~2e-5
    relative within three steps, an amplification of rounding, not a difference of
    algorithm (the evaluation and iteration counts must match exactly either way)."""
    rng = np.random.default_rng(0)
    A = rng.standard_normal((6, 4))
    b = rng.standard_normal(6)
    x0 = np.array([-1.2, 1.0, 0.5, -0.3])
    w0 = rng.standard_normal((4,)) * 0.1
    results = []
    for lib in (tk, torch):
        x = lib.tensor(x0.copy(), requires_grad=True)
        w = lib.tensor(w0.copy(), requires_grad=True)
        At, bt = lib.tensor(A), lib.tensor(b)
        opt = (optim.LBFGS if lib is tk else torch.optim.LBFGS)(
            [x, w], line_search_fn=line_search_fn, **kwargs)

        def closure():
            opt.zero_grad()
            rosen = (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()
            loss = rosen + ((At @ (x + w) - bt) ** 2).mean()
            loss.backward()
            return loss

        trace = []
        for _ in range(steps):
            loss = opt.step(closure)
            trace.append((float(loss.detach()), x.detach().numpy().copy(),
                          w.detach().numpy().copy()))
        state = opt.state[x] if lib is torch else opt.state[id(x)]
        results.append((trace, state["func_evals"], state["n_iter"]))
    return results


@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
def test_lbfgs_matches_torch(line_search_fn):
    (ours, o_evals, o_iter), (theirs, t_evals, t_iter) = _rosenbrock_pair(
        line_search_fn, steps=3, lr=0.1 if line_search_fn is None else 1, max_iter=8,
        history_size=5)
    assert (o_evals, o_iter) == (t_evals, t_iter)
    for k, ((lo, xo, wo), (lt, xt, wt)) in enumerate(zip(ours, theirs)):
        assert lo == pytest.approx(lt, rel=1e-5), f"step {k}"
        assert _rel(xo, xt) < 1e-5 and _rel(wo, wt) < 1e-5, f"step {k}"
    assert ours[-1][0] < ours[0][0]


def test_lbfgs_arguments():
    p = tk.zeros(2, requires_grad=True)
    opt = optim.LBFGS([p])
    g = opt.param_groups[0]
    t = torch.optim.LBFGS([torch.zeros(2, requires_grad=True)]).param_groups[0]
    assert {k: v for k, v in g.items() if k != "params"} == \
        {k: v for k, v in t.items() if k != "params"}
    with pytest.raises(RuntimeError, match="closure"):
        opt.step(None)
    with pytest.raises(ValueError, match="line_search_fn"):
        optim.LBFGS([p], line_search_fn="armijo")
    with pytest.raises(ValueError, match="parameter groups"):
        optim.LBFGS([{"params": [p]}, {"params": [tk.zeros(1, requires_grad=True)]}])


def test_lbfgs_step_bumps_the_parameters_version():
    p = tk.tensor(np.array([1.0, -2.0], np.float32), requires_grad=True)
    opt = optim.LBFGS([p], max_iter=2)
    before = p._version

    def closure():
        opt.zero_grad()
        loss = (p * p).sum()
        loss.backward()
        return loss

    opt.step(closure)
    assert p._version > before
