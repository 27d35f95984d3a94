"""The dedup actor: one Deduplicator, rebuilt when it starts (or restarts) from the seed corpus and the
store: new means neither a seed nor anything the run made before."""

from __future__ import annotations

import ray

from nngpt_ray.config import DedupConfig
from nngpt_ray.dedup import Deduplicator, Verdict
from nngpt_ray.corpus import CorpusStore, seed_entries, seed_spec
from nngpt_ray.store import Store
from nngpt_ray.tasks import identity_for


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class DedupActor:
    def __init__(self, cfg: dict, store_path: str, task: str = "fill", corpus_path: str | None = None) -> None:
        """`task`: what the run generates, which says what counts as the same candidate (see Task.identity);
        `corpus_path`: a lasting corpus whose networks are known too."""
        cfg = DedupConfig.model_validate(cfg)
        self.dedup = Deduplicator(cfg.threshold, cfg.num_perm, cfg.shingle)
        identity = identity_for(task)
        for seed in seed_entries():  # the corpus is known from the start: a seed written out again is not new
            self.dedup.remember(f"seed:{seed.name}", identity(seed_spec(seed)))
        if corpus_path:
            with CorpusStore(corpus_path) as corpus:
                for entry in corpus.entries():
                    self.dedup.remember(entry.name, identity(seed_spec(entry)))
        store = Store(store_path, readonly=True)
        for candidate_id, spec in store.unique_specs():
            self.dedup.remember(candidate_id, identity(spec))
        store.close()

    def check(self, candidate_id: str, code: str) -> Verdict:
        return self.dedup.check(candidate_id, code)

    def peek(self, code: str) -> Verdict:
        return self.dedup.peek(code)

    def known(self) -> list[str]:
        return list(self.dedup.ids)

    def pid(self) -> int:
        import os

        return os.getpid()
