"""A trainer actor: runs one candidate at a time through the sandboxed harness.

Per epoch it writes the result to the store and asks the predictor whether to go on. It holds no
state worth saving: if it dies mid-candidate the controller re-queues the candidate, and the store
keeps the first final result only.
"""

from __future__ import annotations

import os

import ray

from nngpt_ray import datasets
from nngpt_ray.config import Config
from nngpt_ray.harness import evaluate
from nngpt_ray.predictor import PredictorInput
from nngpt_ray.sandbox.process import sweep
from nngpt_ray.spec import CandidateSpec, EvalResult


@ray.remote(max_restarts=-1)
class TrainerActor:
    def __init__(self, cfg: dict, name: str, store: str, predictor: str) -> None:
        """`store` and `predictor` are actor names: looked up, not captured, so restarts of either are seen."""
        self.cfg, self.name = Config.model_validate(cfg), name
        self.store, self.predictor = ray.get_actor(store), ray.get_actor(predictor)
        self.owner = f"{name}@{store}"  # unique per trainer and run
        sweep(self.owner)  # what a previous incarnation of this trainer left running, if it crashed
        self.data: dict[str, datasets.PreparedData] = {}

    def _data(self, dataset: str) -> datasets.PreparedData:
        if dataset not in self.data:
            d = self.cfg.data
            self.data[dataset] = datasets.prepare(dataset, d.data_dir, d.download, max_train=d.max_train)
        return self.data[dataset]

    def train(self, spec: CandidateSpec) -> EvalResult:
        data = self._data(spec.dataset)
        attempt = ray.get(self.store.call.remote("start_attempt", spec.id, self.name))
        seen = []

        def on_epoch(epoch) -> bool:
            seen.append(epoch)
            ray.get(self.store.call.remote("record_epoch", spec.id, epoch))
            x = PredictorInput(code=spec.code, hyperparameters=spec.hyperparameters.as_prm(), dataset=spec.dataset,
                               classes=data.info.classes, epochs=list(seen), total_epochs=spec.hyperparameters.epochs)
            return ray.get(self.predictor.decide.remote(x)).go

        result = evaluate(spec, data, self.cfg.sandbox, device=self.cfg.train.device, threads=self.cfg.train.threads,
                          seed=self.cfg.run.seed, on_epoch=on_epoch, owner=self.owner)
        ray.get(self.store.call.remote("end_attempt", spec.id, attempt, "completed"))
        return result

    def pid(self) -> int:
        return os.getpid()
