"""The learner without Ray: the base model in memory, one new LoRA adapter version per update.

Adapters are versioned directories, written completely before anyone hears of them: an update that
dies midway leaves the last good adapter in place and loses only the update in progress.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

from nngpt_ray import faults
from nngpt_ray.config import Config
from nngpt_ray.lora import AdapterReport, train_adapter


class UpdateFailed(RuntimeError):
    """An update that produced no usable adapter (its loss diverged, it had nothing to learn from)."""


class Learner:
    def __init__(self, cfg: Config) -> None:
        import torch

        from nngpt_ray.llm import load_base

        if cfg.learner.num_gpus == 0:
            torch.set_num_threads(cfg.learner.threads)
        self.cfg = cfg
        self.base, self.tokenizer = load_base(cfg.llm.model, cfg.llm.gguf_file,
                                              "auto" if cfg.learner.num_gpus else "cpu", cfg.llm.dtype)

    def update(self, examples: list[tuple[dict, str]], out_dir: str, previous: str | None) -> AdapterReport:
        """Train on (prompt payload, completion) pairs, starting from `previous` (an adapter dir) if given.
        Raises UpdateFailed when there is nothing to learn from or the loss is not finite."""
        from nngpt_ray.llm import render

        if not examples:
            raise UpdateFailed("no examples to learn from")
        rendered = [(render(payload, self.tokenizer), completion) for payload, completion in examples]
        target = Path(out_dir)
        for stale in target.parent.glob("*.partial*"):  # left by an update that died or failed midway
            shutil.rmtree(stale, ignore_errors=True)
        tmp = target.with_name(f"{target.name}.partial{os.getpid()}")
        report = train_adapter(self.base, self.tokenizer, rendered, tmp, self.cfg.learner,
                               previous=Path(previous) if previous else None, seed=self.cfg.run.seed)
        if not math.isfinite(report.loss):
            shutil.rmtree(tmp, ignore_errors=True)
            raise UpdateFailed(f"the training loss diverged ({report.loss})")
        faults.point("learner.trained")
        os.replace(tmp, out_dir)  # the adapter appears complete or not at all
        return AdapterReport(out_dir, report.examples, report.steps, report.loss, report.seconds)
