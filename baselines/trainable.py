"""A Ray Tune trial is one candidate trained in the same sandbox as the loop's: `step()` is one epoch
relayed from the sandboxed child, `cleanup()` (and a reset for the next trial) kills the child's whole
tree, and the trial lands in the run's store like any candidate (its method marked: tpe, random), so
`nngpt status`, `export` and the comparison read it the same way.

A class Trainable, not a function: Tune's function trainables have no cleanup that could kill a child.
"""

from __future__ import annotations

import os
from typing import Any

import ray
from ray import tune

from nngpt_ray.actors import actor_name
from nngpt_ray.config import Config
from nngpt_ray.failures import FailureKind
from nngpt_ray.harness import Session
from nngpt_ray.search import SearchSpace
from nngpt_ray.spec import CandidateSpec, EvalResult, Origin, Transform
from nngpt_ray.trainer import Trainer

METRIC = "best_accuracy"  # what the searchers maximise: the trial's best validation accuracy so far


class SandboxTrainable(tune.Trainable):
    def setup(self, config: dict[str, Any], run: str = "", method: str = "", settings: dict | None = None,
              space: SearchSpace | None = None, code: str | None = None) -> None:
        """`settings`: the run's config; `space`: what the trial's config is a point of; `code`: a fixed
        network (one-shot HPO comparisons), else the point's family's seed network."""
        self.cfg = Config.model_validate(settings)
        self.method, self.space, self.code = method, space, code
        self.store = ray.get_actor(actor_name("store", run))
        self.core = Trainer(self.cfg, owner=f"tune-{os.getpid()}@{run}")  # one fork server per trial actor
        self.session: Session | None = None
        self._start(config)

    def _start(self, config: dict[str, Any]) -> None:
        c = self.cfg
        transform = Transform(resize=c.data.resize, normalize=c.data.normalize, hflip=c.data.hflip)
        spec: CandidateSpec = self.space.spec(
            config, dataset=c.data.dataset, epochs=c.train.epochs, transform=transform, code=self.code,
            origin=Origin(task="search", cycle=0, sample=f"{self.method}-{self.trial_id}"))
        ray.get(self.store.add_candidate.remote(spec.id, task="search", method=self.method, cycle=0, spec=spec))
        self.spec, self.done, self.epochs = spec, False, []
        row = ray.get(self.store.candidate.remote(spec.id))
        if row["stage"] == "finished":  # Tune restarted a trial whose result is already in: never train it twice
            self.result = EvalResult(candidate_id=spec.id, epochs=ray.get(self.store.epochs.remote(spec.id)),
                                     failure=None if row["status"] == "ok" else FailureKind(row["status"]))
            self.epochs, self.done, self.session = list(self.result.epochs), True, None

    def _launch(self) -> None:
        """The candidate's attempt and sandboxed child start with the trial's first step, not with the actor:
        Tune may set an actor up for a trial and then run the trial on another (reused) actor, and an actor
        that never steps must not have started training (seen: an attempt begun and abandoned 4.6 s later)."""
        c, spec = self.cfg, self.spec
        ray.get(self.store.abandon_attempts.remote(spec.id, "trial restarted"))  # a restart's earlier attempt
        self.attempt = ray.get(self.store.start_attempt.remote(spec.id, f"tune-{self.trial_id}"))
        self.session = Session(spec, self.core.dataset(spec.dataset), c.sandbox, self.core.server,
                               device=c.train.device, threads=c.train.threads, seed=c.run.seed, owner=self.core.owner)
        self.session.__enter__()

    def step(self) -> dict[str, Any]:
        if self.done:
            return self._final(self.result)
        if self.session is None:
            self._launch()
        elif self.epochs:
            self.session.proceed(go=True)
        epoch = self.session.next_epoch()
        if epoch is None or epoch.epoch >= self.spec.hyperparameters.epochs:
            if epoch is not None:
                self.epochs.append(epoch)
            return self._final(self._finish(stopped=False))
        self.epochs.append(epoch)
        ray.get(self.store.record_epoch.remote(self.spec.id, epoch))
        return {METRIC: max(e.val_accuracy for e in self.epochs), "accuracy": epoch.val_accuracy,
                "status": "training"}

    def _final(self, result: EvalResult) -> dict[str, Any]:
        best = result.best_accuracy or 0.0  # a network that failed counts as worthless, as a user would score it
        return {METRIC: best, "accuracy": result.epochs[-1].val_accuracy if result.epochs else 0.0,
                "status": result.final_status, "done": True}

    def _finish(self, stopped: bool) -> EvalResult:
        """Close the session (killing what is left of the child) and complete the candidate in one write."""
        if self.done:
            return self.result
        session, self.session = self.session, None
        if stopped:  # the scheduler stopped it between epochs: the child is told, as the predictor's gate does
            session.proceed(go=False)
        session.__exit__(None, None, None)
        result = session.result
        if stopped and result.failure == FailureKind.STOPPED_EARLY:
            result.error = f"stopped by the scheduler after epoch {len(result.epochs)}"
        ray.get(self.store.complete.remote(result, self.attempt))
        self.result, self.done = result, True
        return result

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        """The actor is reused for the next trial: finish this one (stopped, if it was still running)."""
        if self.session is not None:
            self._finish(stopped=True)
        self._start(new_config)
        return True

    def save_checkpoint(self, checkpoint_dir: str) -> dict:
        """A sandboxed child cannot be checkpointed: a restored trial starts its candidate again (the store
        keeps that to one completed attempt)."""
        return {}

    def load_checkpoint(self, checkpoint) -> None:
        return None

    def cleanup(self) -> None:
        if self.session is not None:
            self._finish(stopped=True)
        self.core.close()
