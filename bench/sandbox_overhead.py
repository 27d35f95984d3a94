"""Per-candidate cost of the sandbox, before and after the fork server, in one run.

    python bench/sandbox_overhead.py [--repeats 5] [--epochs 1] [--seeds plain_cnn resnet]

Three ways to train the same network, interleaved so machine noise hits all of them:

- unsandboxed: the same steps in this already-warm process (module exec, build, train_setup, learn,
  predict) - the floor;
- fresh interpreter: `harness.evaluate` without a fork server, so each candidate pays for a new confined
  interpreter importing torch and preparing the data (what every candidate cost before the fork server);
- fork server: `harness.evaluate` with a warm zygote, as a trainer runs it (every isolation layer applied
  in the forked child).

Printed per network: the medians, the overhead over unsandboxed in milliseconds and as a ratio, and
whether the fork server meets the 0.5 s target.
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
from nngpt_ray.sandbox.process import ForkServer
from nngpt_ray.spec import CandidateSpec, Hyperparameters

TARGET_S = 0.5


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


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def sandboxed(spec, data, server=None) -> None:
    result = evaluate(spec, data, SandboxConfig(), server=server)
    assert result.failure is None, result.error


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seeds", nargs="+", default=["plain_cnn", "resnet"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = prepare("digits")
    seeds = {s.name: s for s in seed_entries()}
    with ForkServer("bench") as server:
        server.start()
        for name in args.seeds:
            seed = seeds[name]
            spec = CandidateSpec(code=seed.code, hyperparameters=Hyperparameters(**seed.hyperparameters,
                                                                                 epochs=args.epochs))
            unsandboxed(spec, data, args.epochs)  # warm this process and the zygote: torch, kernels, data
            sandboxed(spec, data, server)
            times: dict[str, list[float]] = {"unsandboxed": [], "fresh": [], "fork": []}
            for _ in range(args.repeats):
                times["unsandboxed"].append(timed(lambda: unsandboxed(spec, data, args.epochs)))
                times["fresh"].append(timed(lambda: sandboxed(spec, data)))
                times["fork"].append(timed(lambda: sandboxed(spec, data, server)))
            base, fresh, fork = (statistics.median(times[k]) for k in ("unsandboxed", "fresh", "fork"))
            print(f"{name:10s} unsandboxed {1000 * base:6.0f} ms | fresh interpreter {1000 * fresh:6.0f} ms: overhead "
                  f"{1000 * (fresh - base):6.0f} ms, {fresh / base:5.2f}x | fork server {1000 * fork:6.0f} ms: overhead "
                  f"{1000 * (fork - base):5.0f} ms, {fork / base:4.2f}x "
                  f"[{'meets' if fork - base <= TARGET_S else 'misses'} the {1000 * TARGET_S:.0f} ms target] "
                  f"({args.repeats} interleaved repeats, {args.epochs} epoch(s) on digits, medians)")


if __name__ == "__main__":
    main()
