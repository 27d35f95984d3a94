"""The single writer of a run's SQLite store: the `Store` class itself as a Ray actor, so calls are typed
(`store.complete.remote(result, attempt)`). Pinned to the driver's node by the launcher, where the run
directory is (SQLite must not be written over NFS). Every write is idempotent, so Ray may retry one
after a restart.

Because every candidate passes through here, this is also where the candidate counters of the Ray
dashboard are kept (`MeteredStore`).
"""

from __future__ import annotations

import ray

from nngpt_ray import outcomes
from nngpt_ray.actors import metrics
from nngpt_ray.spec import EvalResult
from nngpt_ray.store import Store


class MeteredStore(Store):
    """A Store that counts what it records: generated, valid, unique (at admission), trained, failed by kind."""

    def __init__(self, path: str, run: str = "", **kwargs) -> None:
        super().__init__(path, **kwargs)
        self.run = run

    def add_candidate(self, candidate_id: str, **kwargs) -> bool:
        added = super().add_candidate(candidate_id, **kwargs)
        if added:
            status = kwargs.get("status")
            value = status.value if status is not None else None
            tags = {"adapter": kwargs.get("adapter", 0), "method": kwargs.get("method", "llm")}
            metrics.candidate(self.run, "generated", **tags)
            if outcomes.is_valid(value):
                metrics.candidate(self.run, "valid", **tags)
            if value is None:
                metrics.candidate(self.run, "unique", **tags)  # new at admission (the sandbox may still refuse it)
            elif not outcomes.is_valid(value):
                metrics.candidate(self.run, "failed", kind=value, **tags)
        return added

    def complete(self, result: EvalResult, attempt: int | None = None, outcome: str = "completed") -> bool:
        done = super().complete(result, attempt, outcome)
        if done:
            row = self.candidate(result.candidate_id)
            tags = {"adapter": row["adapter"], "method": row["method"]}
            if result.trained:
                metrics.candidate(self.run, "trained", **tags)
            else:
                metrics.candidate(self.run, "failed", kind=result.final_status, **tags)
            metrics.record("histogram", "nngpt_candidate_seconds", "sandboxed training seconds per candidate",
                           result.duration_s, self.run, status=result.final_status)
        return done


StoreActor = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)(MeteredStore)
