"""The dedup actor: one Deduplicator, rebuilt from the store when it starts (or restarts)."""

from __future__ import annotations

import ray

from nngpt_ray.config import DedupConfig
from nngpt_ray.dedup import Deduplicator, Verdict
from nngpt_ray.store import Store
from nngpt_ray.tasks import identity_for


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class DedupActor:
    def __init__(self, cfg: dict, store_path: str, task: str = "fill") -> None:
        """`task`: what the run generates, which says what counts as the same candidate (see Task.identity)."""
        cfg = DedupConfig.model_validate(cfg)
        self.dedup = Deduplicator(cfg.threshold, cfg.num_perm, cfg.shingle)
        identity = identity_for(task)
        store = Store(store_path, readonly=True)
        for candidate_id, spec in store.unique_specs():
            self.dedup.remember(candidate_id, identity(spec))
        store.close()

    def check(self, candidate_id: str, code: str) -> Verdict:
        return self.dedup.check(candidate_id, code)

    def known(self) -> list[str]:
        return list(self.dedup.ids)

    def pid(self) -> int:
        import os

        return os.getpid()
