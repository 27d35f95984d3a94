"""The learner actor: a thin shell around `nngpt_ray.learner.Learner` (base model kept in memory)."""

from __future__ import annotations

import os

import ray

from nngpt_ray.actors import metrics
from nngpt_ray.config import Config
from nngpt_ray.learner import Learner
from nngpt_ray.lora import AdapterReport


@ray.remote(max_restarts=-1)
class LearnerActor:
    def __init__(self, cfg: dict, run: str = "") -> None:
        self.core, self.run = Learner(Config.model_validate(cfg)), run

    def update(self, out_dir: str, *, examples: list[tuple] = (), groups: list[list[dict]] = (),
               previous: str | None = None, sft_from_previous: bool = False) -> AdapterReport:
        report = self.core.update(out_dir, examples=examples, groups=groups, previous=previous,
                                  sft_from_previous=sft_from_previous)
        metrics.record("gauge", "nngpt_learner_loss", "the last update's final loss", report.loss, self.run,
                       adapter=out_dir.rstrip("/").rsplit("/", 1)[-1])
        metrics.record("gauge", "nngpt_update_seconds", "the last update's duration", report.seconds, self.run)
        return report

    def pid(self) -> int:
        return os.getpid()
