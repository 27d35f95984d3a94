"""The learner actor: LoRA supervised fine-tuning, one new adapter version per call.

It keeps the base model in memory between updates. Adapters are versioned directories, written
completely before the controller hears of them: a learner that dies mid-update leaves the last good
adapter active and loses only the update in progress.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import ray

from nngpt_ray.config import Config
from nngpt_ray.lora import AdapterReport, train_adapter


@ray.remote(max_restarts=-1)
class LearnerActor:
    def __init__(self, cfg: dict) -> None:
        import torch

        from nngpt_ray.llm import load_base

        cfg = Config.model_validate(cfg)
        if cfg.learner.num_gpus == 0:
            torch.set_num_threads(cfg.learner.threads)
        self.cfg = cfg
        self.base, self.tokenizer = load_base(cfg.llm.model, cfg.llm.gguf_file,
                                              "auto" if cfg.learner.num_gpus else "cpu", cfg.llm.dtype)

    def update(self, examples: list[tuple[dict, str]], out_dir: str, previous: str | None) -> AdapterReport:
        """Train on (prompt payload, completion) pairs, starting from `previous` (an adapter dir) if given."""
        from nngpt_ray.llm import render

        rendered = [(render(payload, self.tokenizer), completion) for payload, completion in examples]
        target = Path(out_dir)
        for stale in target.parent.glob(f"{target.name}.partial*"):  # left by a learner that died mid-update
            shutil.rmtree(stale, ignore_errors=True)
        tmp = target.with_name(f"{target.name}.partial{os.getpid()}")
        report = train_adapter(self.base, self.tokenizer, rendered, tmp, self.cfg.learner,
                               previous=Path(previous) if previous else None, seed=self.cfg.run.seed)
        os.replace(tmp, out_dir)  # the adapter appears complete or not at all
        return AdapterReport(out_dir, report.examples, report.steps, report.loss, report.seconds)

    def pid(self) -> int:
        return os.getpid()
