"""Prompt stages on the shared backbone: `fill` (compact, for small models) and `code` (whole modules)."""

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
    raise ValueError(f"unknown task {kind!r}")


__all__ = ["Prompt", "Task", "make_task"]
