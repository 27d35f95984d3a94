"""The predictor actor: continue/stop after each epoch. Its state (finished accuracies) is rebuilt
from the store on start, so a restart changes no decision."""

from __future__ import annotations

import ray

from nngpt_ray.config import PredictorConfig
from nngpt_ray.predictor import CurvePredictor, Decision, PredictorInput
from nngpt_ray.store import Store


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class PredictorActor:
    def __init__(self, cfg: dict, store_path: str) -> None:
        cfg = PredictorConfig.model_validate(cfg)
        self.model = CurvePredictor(cfg)
        store = Store(store_path, readonly=True)
        for dataset, accuracy in store.finished_accuracies():
            self.model.observe(dataset, accuracy)
        store.close()

    def decide(self, x: PredictorInput) -> Decision:
        return self.model.decide(x)

    def observe(self, dataset: str, final_accuracy: float) -> None:
        self.model.observe(dataset, final_accuracy)
