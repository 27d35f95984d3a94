"""The learner actor: a thin shell around `nngpt_ray.learner.Learner` (base model kept in memory)."""

from __future__ import annotations

import os

import ray

from nngpt_ray.config import Config
from nngpt_ray.learner import Learner
from nngpt_ray.lora import AdapterReport


@ray.remote(max_restarts=-1)
class LearnerActor:
    def __init__(self, cfg: dict) -> None:
        self.core = Learner(Config.model_validate(cfg))

    def update(self, examples: list[tuple[dict, str]], out_dir: str, previous: str | None) -> AdapterReport:
        return self.core.update(examples, out_dir, previous)

    def pid(self) -> int:
        return os.getpid()
