"""One trainer's work without Ray: its fork server, the datasets it has prepared, and the harness.

The trainer actor is a thin shell around this class (it adds the store and the predictor gate).
"""

from __future__ import annotations

from nngpt_ray import datasets
from nngpt_ray.config import Config
from nngpt_ray.harness import EpochCallback, evaluate
from nngpt_ray.sandbox.process import ForkServer, sweep
from nngpt_ray.spec import CandidateSpec, EvalResult


class Trainer:
    def __init__(self, cfg: Config, owner: str, gpu_memory_fraction: float | None = None) -> None:
        """`owner` is unique per trainer and run; what a previous incarnation of it left running (it
        crashed mid-candidate) is killed first."""
        self.cfg, self.owner, self.gpu_memory_fraction = cfg, owner, gpu_memory_fraction
        sweep(owner)
        self.server = ForkServer(owner)
        self.data: dict[str, datasets.PreparedData] = {}

    def dataset(self, name: str) -> datasets.PreparedData:
        if name not in self.data:
            self.data[name] = datasets.from_config(self.cfg.data, name)
        return self.data[name]

    def train(self, spec: CandidateSpec, on_epoch: EpochCallback | None = None, test: bool = False,
              epochs: int | None = None) -> EvalResult:
        """Train `spec` in the sandbox; `test` also scores the test split after the last epoch."""
        c = self.cfg
        return evaluate(spec, self.dataset(spec.dataset), c.sandbox, epochs=epochs, device=c.train.device,
                        threads=c.train.threads, seed=c.run.seed, on_epoch=on_epoch, owner=self.owner,
                        server=self.server, test=test, gpu_memory_fraction=self.gpu_memory_fraction)

    def close(self) -> None:
        self.server.close()
