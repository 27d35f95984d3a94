"""The single writer of a run's SQLite store: the `Store` class itself as a Ray actor, so calls are typed
(`store.complete.remote(result, attempt)`). Pinned to the driver's node by the launcher, where the run
directory is (SQLite must not be written over NFS). Every write is idempotent, so Ray may retry one
after a restart."""

from __future__ import annotations

import ray

from nngpt_ray.store import Store

StoreActor = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)(Store)
