#!/usr/bin/env python3
"""PyTorch 2.15's optimizers, gradient clipping and learning-rate schedulers on fixed inputs,
written to `optim.json` for `crates/autograd/tests/all/optim_torch.rs`.

Each optimizer case starts three float64 parameters at fixed values and, at every step,
gives the first two a fixed gradient (`grads[step][param]`) and the third none (PyTorch skips
it), then records every parameter's values after the step. Clipping cases record the norm
`clip_grad_norm_` returns and the gradients it leaves; scheduler cases the learning rate
before each step.

Not run by the tests or CI (the project never depends on PyTorch); run by hand, with
`pip install torch`, to regenerate:

    python3 make_optim.py
"""
import json
import math
import os

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
STEPS = 12
INIT = [[0.5, -1.25, 2.0], [[0.3, -0.7], [1.1, 0.05]], [4.0]]


def grads_at(step):
    """Gradients that change sign and size from step to step (the third parameter has none)."""
    g0 = [math.sin(1.3 * step + k) * (1 + 0.5 * k) for k in range(3)]
    g1 = [[math.cos(0.7 * step + 2 * i + j) * 0.8 for j in range(2)] for i in range(2)]
    return [g0, g1]


OPTIMIZERS = [
    ("sgd", "SGD", dict(lr=0.1)),
    ("sgd_momentum_dampening", "SGD", dict(lr=0.05, momentum=0.9, dampening=0.3)),
    ("sgd_nesterov_weight_decay", "SGD", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.1)),
    ("adam", "Adam", dict(lr=0.02)),
    ("adam_amsgrad_weight_decay", "Adam", dict(lr=0.02, betas=(0.8, 0.95), eps=1e-6, amsgrad=True, weight_decay=0.1)),
    ("adamw", "AdamW", dict(lr=0.02)),
    ("adamw_amsgrad", "AdamW", dict(lr=0.03, weight_decay=0.2, amsgrad=True)),
    ("rmsprop", "RMSprop", dict(lr=0.01)),
    ("rmsprop_centered_momentum_weight_decay", "RMSprop", dict(lr=0.01, alpha=0.9, eps=1e-6, momentum=0.5, centered=True, weight_decay=0.05)),
    ("adagrad", "Adagrad", dict(lr=0.1)),
    ("adagrad_decay_initial", "Adagrad", dict(lr=0.1, lr_decay=0.05, weight_decay=0.02, initial_accumulator_value=0.3, eps=1e-8)),
]

SCHEDULERS = [
    ("step", dict(kind="StepLR", step_size=3, gamma=0.5)),
    ("exponential", dict(kind="ExponentialLR", gamma=0.8)),
    ("cosine", dict(kind="CosineAnnealingLR", T_max=5, eta_min=0.01)),
    ("linear_warmup", dict(kind="LinearLR", start_factor=0.25, total_iters=4)),
    ("warmup_then_cosine", dict(kind="SequentialLR", warmup=dict(start_factor=0.2, total_iters=3), cosine=dict(T_max=6, eta_min=0.0))),
]


def scheduler(opt, cfg):
    s = torch.optim.lr_scheduler
    kind = cfg["kind"]
    if kind == "StepLR":
        return s.StepLR(opt, step_size=cfg["step_size"], gamma=cfg["gamma"])
    if kind == "ExponentialLR":
        return s.ExponentialLR(opt, gamma=cfg["gamma"])
    if kind == "CosineAnnealingLR":
        return s.CosineAnnealingLR(opt, T_max=cfg["T_max"], eta_min=cfg["eta_min"])
    if kind == "LinearLR":
        return s.LinearLR(opt, start_factor=cfg["start_factor"], total_iters=cfg["total_iters"])
    w, c = cfg["warmup"], cfg["cosine"]
    return s.SequentialLR(
        opt,
        [s.LinearLR(opt, start_factor=w["start_factor"], total_iters=w["total_iters"]),
         s.CosineAnnealingLR(opt, T_max=c["T_max"], eta_min=c["eta_min"])],
        milestones=[w["total_iters"]],
    )


def main():
    out = {"torch": torch.__version__, "steps": STEPS, "init": INIT,
           "grads": [grads_at(k) for k in range(STEPS)], "optimizers": [], "clip": [], "schedulers": []}
    for name, kind, kwargs in OPTIMIZERS:
        params = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in INIT]
        opt = getattr(torch.optim, kind)(params, **kwargs)
        trajectory = []
        for k in range(STEPS):
            for p, g in zip(params, grads_at(k)):
                p.grad = torch.tensor(g, dtype=torch.float64)
            opt.step()
            trajectory.append([p.detach().tolist() for p in params])
        options = {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}
        out["optimizers"].append({"name": name, "kind": kind, "options": options, "values": trajectory})
    for max_norm in [0.5, 100.0]:
        params = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in INIT]
        for p, g in zip(params, grads_at(1)):
            p.grad = torch.tensor(g, dtype=torch.float64)
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        out["clip"].append({"max_norm": max_norm, "norm": norm.item(),
                            "grads": [p.grad.tolist() for p in params[:2]]})
    for name, cfg in SCHEDULERS:
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        sched = scheduler(opt, cfg)
        lrs = []
        for _ in range(16):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        out["schedulers"].append({"name": name, **cfg, "base_lr": 0.1, "lrs": lrs})
    with open(os.path.join(HERE, "optim.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
