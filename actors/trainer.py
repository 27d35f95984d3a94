"""A trainer actor: one candidate at a time through the sandboxed harness (`nngpt_ray.trainer.Trainer`).

Per epoch it records the result in the store and asks the predictor whether to go on; at the end it
finishes the candidate in one store transaction (epochs, status, the attempt's outcome) and only then
returns. It holds no state worth saving: if it dies mid-candidate, the candidate's attempt stays open
and the controller (or a resume) trains it again, once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import ray

from nngpt_ray import faults
from nngpt_ray.actors import actor_name
from nngpt_ray.config import Config
from nngpt_ray.predictor import PredictorInput
from nngpt_ray.spec import CandidateSpec, EpochResult, EvalResult
from nngpt_ray.trainer import Trainer


@dataclass(frozen=True)
class Completion:
    result: EvalResult
    recorded: bool  # False: the store already held a final result for this candidate (this one was dropped)


@ray.remote(max_restarts=-1)
class TrainerActor:
    def __init__(self, cfg: dict, name: str, run: str) -> None:
        """The store and predictor are looked up by name (handles passed to a restartable actor's constructor
        could not be restored with it, ray-project/ray#53727); the handles survive their restarts."""
        config = Config.model_validate(cfg)
        share = config.trainers.num_gpus
        self.name = name
        self.store, self.predictor = ray.get_actor(actor_name("store", run)), ray.get_actor(actor_name("predictor", run))
        self.core = Trainer(config, owner=f"{name}@{run}", gpu_memory_fraction=share if 0 < share < 1 else None)

    def train(self, spec: CandidateSpec) -> Completion:
        faults.point("trainer.train")
        attempt = ray.get(self.store.start_attempt.remote(spec.id, self.name))
        faults.point("trainer.attempt_started")
        classes = self.core.dataset(spec.dataset).info.classes
        seen: list[EpochResult] = []

        def on_epoch(epoch: EpochResult, features: dict) -> bool:
            seen.append(epoch)
            ray.get(self.store.record_epoch.remote(spec.id, epoch))
            faults.point("trainer.epoch_recorded")
            x = PredictorInput(code=spec.code, hyperparameters=spec.hyperparameters.as_prm(), dataset=spec.dataset,
                               classes=classes, epochs=list(seen), total_epochs=spec.hyperparameters.epochs,
                               features=features, params=features.get("params"), transform=spec.transform.model_dump())
            decision = ray.get(self.predictor.decide.remote(x))
            if len(seen) < spec.hyperparameters.epochs:  # every continue/stop decision, accountable
                self.store.add_decision.remote(spec.id, epoch.epoch, decision.go, decision.projected, decision.upper,
                                               decision.reason, decision.model)
            return decision.go

        result = self.core.train(spec, on_epoch)
        recorded = ray.get(self.store.complete.remote(result, attempt))
        faults.point("trainer.completed")
        return Completion(result, recorded)

    def final_test(self, spec: CandidateSpec) -> EvalResult:
        """Retrain `spec` (no gate, no attempt) and score the test split once."""
        return self.core.train(spec, test=True)

    def pid(self) -> int:
        return os.getpid()

    def node(self) -> str:
        """The Ray node this trainer runs on (the dashboard shows the same)."""
        return ray.get_runtime_context().get_node_id()
