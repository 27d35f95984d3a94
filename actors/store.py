"""The single writer of a run's SQLite store. Pinned to the driver's node, where the run directory is."""

from __future__ import annotations

import ray

from nngpt_ray.store import Store


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class StoreActor:
    def __init__(self, path: str, create: bool = False) -> None:
        self.store = Store(path, create=create)

    def call(self, method: str, *args, **kwargs):
        """Run one Store method. Every write is idempotent, so Ray may retry it after a restart."""
        return getattr(self.store, method)(*args, **kwargs)
