"""Per-candidate cost of the sandbox: the same network trained sandboxed and unsandboxed, in one run.

    python bench/sandbox_overhead.py [--repeats 5] [--epochs 1] [--seeds plain_cnn resnet]

Sandboxed: `harness.evaluate` (static checks, a fresh confined process that imports torch, loads the
data, trains, predicts; the parent scores). Unsandboxed: the same steps in this already-warm process
(module exec, build, train_setup, learn, predict). The runs are interleaved so machine noise hits both;
the medians, their difference in milliseconds and their ratio are printed.
"""

from __future__ import annotations

import argparse
import statistics
import time
import types

import numpy as np
import torch

from nngpt_ray.config import SandboxConfig
from nngpt_ray.corpus import seed_entries
from nngpt_ray.datasets import prepare
from nngpt_ray.harness import evaluate
from nngpt_ray.spec import CandidateSpec, Hyperparameters


def unsandboxed(spec: CandidateSpec, data, epochs: int) -> float:
    """The same work without the sandbox, in this process; returns the validation accuracy."""
    x = torch.from_numpy(np.load(data.train_x)).float().div_(255)
    y = torch.from_numpy(np.load(data.train_y).astype("int64"))
    vx = torch.from_numpy(np.load(data.val_x)).float().div_(255)
    mean, std = torch.tensor(data.mean).view(1, -1, 1, 1), torch.tensor(data.std).view(1, -1, 1, 1)
    x, vx = (x - mean) / std, (vx - mean) / std
    module = types.ModuleType("candidate")
    exec(compile(spec.code, "candidate.py", "exec"), module.__dict__)
    prm = spec.hyperparameters.as_prm()
    net = module.Net((prm["batch"], *data.info.shape), (data.info.classes,), prm, torch.device("cpu"))
    net.train_setup(prm)
    for _ in range(epochs):
        order = torch.randperm(len(x))
        batches = [(x[order[i:i + prm["batch"]]], y[order[i:i + prm["batch"]]]) for i in range(0, len(x), prm["batch"])]
        net.learn(batches)
    net.eval()
    with torch.no_grad():
        predicted = net(vx).argmax(1).numpy()
    return float((predicted == data.val_y).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seeds", nargs="+", default=["plain_cnn", "resnet"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = prepare("digits")
    seeds = {s.name: s for s in seed_entries()}
    for name in args.seeds:
        seed = seeds[name]
        spec = CandidateSpec(code=seed.code, hyperparameters=Hyperparameters(**seed.hyperparameters, epochs=args.epochs))
        unsandboxed(spec, data, args.epochs)  # warm this process: torch, kernels, data files
        inside, outside = [], []
        for _ in range(args.repeats):
            t = time.perf_counter()
            result = evaluate(spec, data, SandboxConfig())
            inside.append(time.perf_counter() - t)
            assert result.failure is None, result.error
            t = time.perf_counter()
            unsandboxed(spec, data, args.epochs)
            outside.append(time.perf_counter() - t)
        a, b = statistics.median(inside), statistics.median(outside)
        print(f"{name:12s} sandboxed {1000 * a:7.0f} ms   unsandboxed {1000 * b:7.0f} ms   "
              f"overhead {1000 * (a - b):7.0f} ms per candidate   ratio {a / b:5.2f}x   "
              f"({args.repeats} interleaved repeats, {args.epochs} epoch(s) on digits)")


if __name__ == "__main__":
    main()
