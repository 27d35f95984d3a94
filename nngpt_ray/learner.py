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
        self.base, self.tokenizer = load_base(cfg.llm.model, cfg.llm.gguf_file, "auto" if cfg.learner.num_gpus else "cpu",
                                              cfg.llm.dtype, cfg.learner.quantization)
        faults.point("learner.loaded")

    def update(self, out_dir: str, *, examples: list[tuple] = (), groups: list[list[dict]] = (),
               previous: str | None = None, sft_from_previous: bool = False) -> AdapterReport:
        """One new adapter version in `out_dir`: supervised on `examples` ((prompt payload, completion[,
        weight]) pairs), then GRPO on `groups` (completions of one prompt each, with their sampled tokens,
        old log-probabilities, temperature and reward), whichever are given. SFT starts from a fresh adapter
        (or from `previous` with `sft_from_previous`); GRPO continues from SFT's result, else from `previous`
        (the adapter that sampled the groups). Raises UpdateFailed when there is nothing to learn or the
        loss diverges; the adapter appears complete or not at all."""
        from nngpt_ray.grpo import Sample, grpo_update
        from nngpt_ray.llm import render

        if not examples and not groups:
            raise UpdateFailed("no examples to learn from")
        target = Path(out_dir)
        for stale in target.parent.glob("*.partial*"):  # left by an update that died or failed midway
            shutil.rmtree(stale, ignore_errors=True)
        tmp = target.with_name(f"{target.name}.partial{os.getpid()}")
        start = Path(previous) if previous else None
        report = None
        if examples:
            rendered = [(render(e[0], self.tokenizer), *e[1:]) for e in examples]
            report = train_adapter(self.base, self.tokenizer, rendered, tmp / "sft", self.cfg.learner,
                                   previous=start if sft_from_previous else None, seed=self.cfg.run.seed)
            _check(report, "SFT")
            start = tmp / "sft"
        if groups:
            samples = [[Sample(render(g["prompt"], self.tokenizer), g["tokens"], g["logprobs"], g["reward"],
                               g["temperature"]) for g in group] for group in groups]
            grpo = grpo_update(self.base, self.tokenizer, samples, tmp / "grpo", self.cfg.learner, previous=start,
                               seed=self.cfg.run.seed)
            _check(grpo, "GRPO")
            report = AdapterReport(grpo.path, (report.examples if report else 0) + grpo.examples,
                                   (report.steps if report else 0) + grpo.steps, grpo.loss,
                                   (report.seconds if report else 0) + grpo.seconds)
        faults.point("learner.trained")
        os.replace(report.path, out_dir)  # the adapter appears complete or not at all
        shutil.rmtree(tmp, ignore_errors=True)
        return AdapterReport(out_dir, report.examples, report.steps, report.loss, report.seconds)


def _check(report: AdapterReport, what: str) -> None:
    if not math.isfinite(report.loss):
        raise UpdateFailed(f"the {what} loss diverged ({report.loss})")
