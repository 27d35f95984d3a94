"""The predictor actor: continue/stop after each epoch. Its memory (finished accuracies) is rebuilt from
the store on start, so a restart changes no decision. With `predictor.kind: learned` it loads the model
file, or fits one from the run's own results once there are enough, refitting every `refit_every`
results; until then it decides with the curve rule and says so in every decision's reason."""

from __future__ import annotations

from pathlib import Path

import ray

from nngpt_ray.config import PredictorConfig
from nngpt_ray.failures import UserError
from nngpt_ray.predictor import CurvePredictor, Decision, LearnedModel, LearnedPredictor, PredictorInput, fit
from nngpt_ray.store import Store


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class PredictorActor:
    def __init__(self, cfg: dict, store_path: str) -> None:
        self.cfg, self.store_path = PredictorConfig.model_validate(cfg), store_path
        self.fallback = ""
        self.model = self._model()
        with Store(store_path, readonly=True) as store:
            for dataset, accuracy in store.finished_accuracies():
                self.model.observe(dataset, accuracy)
        self.since_fit = 0

    def _model(self) -> CurvePredictor:
        if self.cfg.kind != "learned":
            return CurvePredictor(self.cfg)
        try:
            if self.cfg.model_file is not None:
                return LearnedPredictor(self.cfg, LearnedModel.load(Path(self.cfg.model_file)))
            with Store(self.store_path, readonly=True) as store:
                return LearnedPredictor(self.cfg, fit([store], self.cfg.quantile))
        except UserError as err:
            self.fallback = f" (curve rule: {' '.join(str(err).split())[:160]})"
            return CurvePredictor(self.cfg)

    def decide(self, x: PredictorInput) -> Decision:
        decision = self.model.decide(x)
        return decision.model_copy(update={"reason": decision.reason + self.fallback}) if self.fallback else decision

    def observe(self, dataset: str, final_accuracy: float) -> None:
        self.model.observe(dataset, final_accuracy)
        self.since_fit += 1
        if self.cfg.kind == "learned" and self.cfg.refit_every and self.since_fit >= self.cfg.refit_every \
                and self.cfg.model_file is None:
            finals, self.since_fit = self.model.finals, 0
            self.fallback = ""
            self.model = self._model()  # refit on everything the run has learned so far
            self.model.finals = finals
