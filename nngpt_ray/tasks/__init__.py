"""Prompt stages on the shared backbone: `fill` (compact, for small models), `code` (whole modules) and
`hpo` (hyperparameters for a given network)."""

from __future__ import annotations

from nngpt_ray.datasets import DatasetInfo
from nngpt_ray.spec import Transform
from nngpt_ray.tasks.base import Prompt, Task


def make_task(kind: str, dataset: DatasetInfo, epochs: int, transform: Transform, examples: int = 1) -> Task:
    if kind == "fill":
        from nngpt_ray.tasks.fill import FillTask

        return FillTask(dataset, epochs, transform, examples)
    if kind == "code":
        from nngpt_ray.tasks.code import CodeTask

        return CodeTask(dataset, epochs, transform, examples)
    if kind == "hpo":
        from nngpt_ray.tasks.hpo import HpoTask

        return HpoTask(dataset, epochs, transform, examples)
    raise ValueError(f"unknown task {kind!r}")


def identity_for(kind: str):
    """The function that says what dedup compares for a task kind (the code; for hpo, code and settings)."""
    if kind == "hpo":
        from nngpt_ray.tasks.hpo import HpoTask

        return HpoTask.identity
    return Task.identity


__all__ = ["Prompt", "Task", "identity_for", "make_task"]
