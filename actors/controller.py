"""The controller: the job's driver, keeping every stage of the loop busy at once.

    generate (LLM deployment) -> parse -> dedup -> queue -> trainers (N) -> store
                                                                  \\-> every K accepted: learner -> new adapter

Coroutines share a bounded queue: the generator fills it (and waits when it is full), one worker per
trainer actor drains it, and the learner runs beside both. A *cycle* is the span in which one
adapter version generates `candidates_per_cycle` new candidates. The learner starts as soon as K
new accepted results exist, while generation and training go on; its adapter is *staged* and takes
over at the next cycle boundary, so every cycle is a same-sized sample of one adapter's work. Every
candidate records the adapter and cycle that made it, so each update's effect reads off `nngpt status`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import random
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from nngpt_ray.actors import actor_name
from nngpt_ray.actors.dedup import DedupActor
from nngpt_ray.actors.learner import LearnerActor
from nngpt_ray.actors.predictor import PredictorActor
from nngpt_ray.actors.store import StoreActor
from nngpt_ray.actors.trainer import TrainerActor
from nngpt_ray.config import Config
from nngpt_ray.corpus import CorpusEntry, seed_entries
from nngpt_ray.datasets import dataset_info
from nngpt_ray.failures import FailureKind
from nngpt_ray.parsing import ParseFailure
from nngpt_ray.rundir import RunDir
from nngpt_ray.serve.engines.base import Adapter
from nngpt_ray.source import short_hash
from nngpt_ray.spec import CandidateSpec, EvalResult, Origin, Transform
from nngpt_ray.store import INVALID_KINDS
from nngpt_ray.tasks import make_task
from nngpt_ray.tasks.base import Prompt

_DUPLICATE_KIND = {"duplicate": FailureKind.DUPLICATE, "near_duplicate": FailureKind.NEAR_DUPLICATE}


@dataclasses.dataclass
class CycleCounts:
    generated: int = 0
    valid: int = 0
    unique: int = 0
    queued: int = 0  # new candidates sent to training (the cycle's quota counts these)
    trained: int = 0
    best: float | None = None


class Controller:
    def __init__(self, cfg: Config, run: RunDir, resume: bool = False) -> None:
        self.cfg, self.rundir, self.resume = cfg, run, resume
        self.name = run.root.name
        self.rng = random.Random(cfg.run.seed)
        info = dataset_info(cfg.data.dataset)
        self.task = make_task(cfg.task.kind, info, cfg.train.epochs,
                              Transform(resize=cfg.data.resize, normalize=cfg.data.normalize, hflip=cfg.data.hflip),
                              cfg.task.examples)
        self.counts: dict[int, CycleCounts] = defaultdict(CycleCounts)
        self.events: list[str] = []
        self.busy_seconds = 0.0
        self.training_now = 0
        self.learning = False
        self.staged: Adapter | None = None  # trained, loaded, waiting for the cycle boundary
        self.stopping = False
        self.sample_ids = itertools.count()

    # ------------------------------------------------------------------ set-up

    def start_actors(self) -> None:
        """Create the actors and the LLM deployment (named, so the dashboard tells the stages apart)."""
        from ray import serve

        from nngpt_ray.serve.app import deploy, quiet

        cfg, here = self.cfg, NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        stages = ["store", "dedup", "predictor", "learner", *(f"trainer-{i}" for i in range(cfg.trainers.count))]
        for stage in stages:  # left by a driver of this run that was killed (resume): they go first
            _kill_if_alive(actor_name(stage, self.name))
        self.store = StoreActor.options(name=actor_name("store", self.name), scheduling_strategy=here).remote(
            str(self.rundir.store), create=not self.resume)
        ray.get(self.store.call.remote("meta", "application"))  # the store exists before anyone reads it
        self.dedup = DedupActor.options(name=actor_name("dedup", self.name), scheduling_strategy=here).remote(
            cfg.dedup.model_dump(), str(self.rundir.store))
        self.predictor = PredictorActor.options(name=actor_name("predictor", self.name), scheduling_strategy=here
                                                ).remote(cfg.predictor.model_dump(), str(self.rundir.store))
        plain = cfg.model_dump(mode="json")
        self.trainers = [
            TrainerActor.options(name=actor_name(f"trainer-{i}", self.name), num_cpus=cfg.trainers.num_cpus,
                                 num_gpus=cfg.trainers.num_gpus).remote(
                plain, f"trainer-{i}", actor_name("store", self.name), actor_name("predictor", self.name))
            for i in range(cfg.trainers.count)]
        self.learner = LearnerActor.options(name=actor_name("learner", self.name), num_cpus=cfg.learner.num_cpus,
                                            num_gpus=cfg.learner.num_gpus).remote(plain)
        quiet()
        serve.start(proxy_location="Disabled")
        self.llm = deploy(cfg, f"nngpt-llm-{self.name}")

    def _store(self, method: str, *args, **kwargs) -> Any:
        return ray.get(self.store.call.remote(method, *args, **kwargs))

    async def _astore(self, method: str, *args, **kwargs) -> Any:
        return await self.store.call.remote(method, *args, **kwargs)

    def _restore_state(self) -> list[CandidateSpec]:
        """Where the run stands: current cycle and adapter, and the candidates to train again."""
        cycles = self._store("cycles")
        adapters = self._store("adapters")
        active = [a for a in adapters if a["activated"]]
        self.adapter = _adapter(active[-1]) if active else None
        newest = adapters[-1] if adapters else None
        if newest and not newest["activated"] and Path(newest["path"]).is_dir():
            self.staged = _adapter(newest)  # trained before the driver died, not yet switched in
        if not cycles:
            self.cycle = 0
            self._store("start_cycle", 0, 0)
        else:
            self.cycle = cycles[-1]["cycle"]
        for row in self._store("cycle_stats"):
            c = self.counts[row["cycle"]]
            c.generated, c.valid, c.unique, c.trained = (int(row[k] or 0) for k in ("generated", "valid", "unique", "trained"))
            c.queued = int(row["queued"] or 0)
            c.best = row["best_accuracy"]
        self.accepted_since_update = self._store("accepted_since", self.cfg.learner.accept_threshold,
                                                 newest["created"] if newest else 0.0)
        self.generated_total = sum(c.generated for c in self.counts.values())
        self._store("interrupt_open_attempts")
        return self._store("unfinished")

    # ------------------------------------------------------------------ the loop

    async def run(self, on_tick=None) -> dict[str, Any]:
        self.started = time.monotonic()
        self.queue: asyncio.Queue = asyncio.Queue()
        self.retries: list[tuple[Prompt, str]] = []
        self.cycle_advanced = asyncio.Event()
        self.learn_task: asyncio.Task | None = None
        for spec in self._restore_state():
            self.queue.put_nowait((spec, 0))
            self.events.append(f"re-queued {spec.id} from the interrupted run")
        self.pending = {spec.id: spec.origin.cycle for spec, _ in list(self.queue._queue)}  # type: ignore[attr-defined]
        workers = [asyncio.create_task(self._train_worker(i)) for i in range(len(self.trainers))]
        ticker = asyncio.create_task(self._tick(on_tick)) if on_tick else None
        try:
            await self._generate()
            await self.queue.join()
            if self.learn_task:
                await asyncio.shield(self.learn_task)
        finally:
            self.stopping = True
            for w in workers:
                w.cancel()
            if ticker:
                ticker.cancel()
            self.wall_seconds = time.monotonic() - self.started
        return self.summary()

    async def _generate(self) -> None:
        cfg = self.cfg
        while not self._budget_spent():
            if self._quota_done():
                if self.cycle >= cfg.loop.cycles - 1:
                    return
                self._maybe_advance()
                await self._wait_for_cycle_change()
                continue
            while self.queue.qsize() >= cfg.loop.queue_size:
                await asyncio.sleep(0.2)
            counts = self.counts[self.cycle]
            n = min(cfg.llm.batch_size, cfg.loop.max_generations_per_cycle - counts.generated,
                    max(1, cfg.loop.candidates_per_cycle - counts.queued))
            retries, self.retries = self.retries[:n], self.retries[n:]
            prompts = [(p, 2, parent) for p, parent in retries]
            pool = self._pool()
            prompts += [(self.task.prompt(pool, self.rng), 1, None) for _ in range(n - len(prompts))]
            adapter, cycle = self.adapter, self.cycle
            sampling = {"max_new_tokens": cfg.llm.max_new_tokens, "temperature": cfg.llm.temperature,
                        "top_p": cfg.llm.top_p, "top_k": cfg.llm.top_k, "stop": list(self.task.stop),
                        "seed": self.rng.randrange(2**31)}
            completions = await self._generate_with_retries([p.payload() for p, _, _ in prompts], sampling, adapter)
            for (prompt, attempt, parent), completion in zip(prompts, completions, strict=True):
                await self._admit(prompt, completion, attempt, parent, adapter, cycle)
            self._maybe_advance()

    async def _generate_with_retries(self, payloads: list[dict], sampling: dict, adapter: Adapter | None,
                                     patience_s: float = 600) -> list[str]:
        """One generation request; while Serve replaces a dead replica, wait and ask again."""
        deadline = time.monotonic() + patience_s
        delay = 1.0
        while True:
            try:
                return await self.llm.generate.remote(payloads, sampling, dataclasses.asdict(adapter) if adapter else None)
            except (ray.exceptions.RayError, RuntimeError) as err:
                if time.monotonic() > deadline:
                    raise
                self.events.append(f"LLM request failed ({type(err).__name__}); retrying in {delay:.0f} s")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 15.0)

    def _quota_done(self, cycle: int | None = None) -> bool:
        c = self.counts[self.cycle if cycle is None else cycle]
        loop = self.cfg.loop
        return c.queued >= loop.candidates_per_cycle or c.generated >= loop.max_generations_per_cycle

    async def _admit(self, prompt: Prompt, completion: str, attempt: int, parent: str | None,
                     adapter: Adapter | None, cycle: int) -> None:
        """Parse, dedup and record one completion; queue it for training if it is new."""
        version = adapter.version if adapter else 0
        origin = Origin(task=self.task.kind, prompt_id=prompt.id, parents=[*prompt.parents, *([parent] if parent else [])],
                        adapter=version, cycle=cycle, sample=f"{cycle}-{next(self.sample_ids)}-{time.time_ns()}",
                        attempt=attempt)
        common = dict(task=self.task.kind, cycle=cycle, adapter=version, prompt_id=prompt.id, attempt=attempt,
                      completion=completion)
        await self._astore("add_prompt", prompt.id, prompt.task, prompt.payload(), list(prompt.parents))
        counts = self.counts[cycle]
        counts.generated += 1
        self.generated_total += 1
        try:
            spec = self.task.parse(prompt, completion, origin)
        except ParseFailure as failure:
            candidate_id = short_hash(prompt.id, completion, origin.sample)
            await self._astore("add_candidate", candidate_id, status=failure.kind, error=failure.diagnostic, **common)
            if attempt == 1 and self.cfg.task.reprompt:
                self.retries.append((self.task.reprompt(prompt, completion, failure.diagnostic), candidate_id))
            return
        counts.valid += 1
        verdict = await self.dedup.check.remote(spec.id, spec.code)
        if verdict.kind != "new":
            await self._astore("add_candidate", spec.id, spec=spec, status=_DUPLICATE_KIND[verdict.kind],
                               error=f"{verdict.kind.replace('_', ' ')} of {verdict.similar_to} "
                                     f"(Jaccard {verdict.similarity})",
                               similar_to=verdict.similar_to, similarity=verdict.similarity, **common)
            return
        counts.unique += 1
        counts.queued += 1
        await self._astore("add_candidate", spec.id, spec=spec, similar_to=verdict.similar_to,
                           similarity=verdict.similarity, **common)
        (self.rundir.networks / f"{spec.id}.py").write_text(spec.code)
        self.pending[spec.id] = cycle
        self.queue.put_nowait((spec, 0))

    async def _train_worker(self, index: int) -> None:
        trainer = self.trainers[index]
        while True:
            spec, tries = await self.queue.get()
            started = time.monotonic()
            self.training_now += 1
            try:
                result: EvalResult = await trainer.train.remote(spec)
            except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as err:
                await self._trainer_lost(spec, tries, err)
                continue
            finally:
                self.training_now -= 1
                self.busy_seconds += time.monotonic() - started
                self.queue.task_done()
            await self._record(spec, result)

    async def _trainer_lost(self, spec: CandidateSpec, tries: int, err: Exception) -> None:
        """The trainer died with `spec` in hand: re-queue it (bounded), unless its result is already in."""
        await self._astore("end_open_attempts", spec.id, "trainer lost")
        row = await self._astore("candidate", spec.id)
        if row and row["stage"] == "finished":
            return
        if tries < self.cfg.trainers.max_retries:
            self.events.append(f"trainer lost while training {spec.id}; re-queued (try {tries + 2})")
            await self._astore("requeue", spec.id)
            self.queue.put_nowait((spec, tries + 1))
        else:
            result = EvalResult(candidate_id=spec.id, failure=FailureKind.CRASHED,
                                error=f"its trainer died {tries + 1} times: {type(err).__name__}")
            await self._record(spec, result)

    async def _record(self, spec: CandidateSpec, result: EvalResult) -> None:
        if not await self._astore("finish", result):
            return
        cycle = self.pending.pop(spec.id, spec.origin.cycle or 0)
        counts = self.counts[cycle]
        if result.failure in INVALID_KINDS:  # parsed, but not a working network after all
            counts.valid -= 1
            counts.unique -= 1
        if result.epochs and result.failure in (None, FailureKind.STOPPED_EARLY):
            counts.trained += 1
            best = result.best_accuracy or 0.0
            counts.best = max(counts.best or 0.0, best)
            await self.predictor.observe.remote(spec.dataset, best)
            if best >= self.cfg.learner.accept_threshold:
                self.accepted_since_update += 1
        self._maybe_learn()
        self._maybe_advance()

    # ------------------------------------------------------------------ learning and cycles

    def _maybe_learn(self, force: bool = False) -> None:
        """Start an update once K new accepted results exist (or, forced, any), unless one is pending or
        no later cycle would use it."""
        needed = 1 if force else self.cfg.learner.every_k
        if (self.learning or self.staged or self.stopping or self.accepted_since_update < needed
                or self.cycle >= self.cfg.loop.cycles - 1):
            return
        self.learning = True
        self.learn_task = asyncio.create_task(self._learn())

    async def _learn(self) -> None:
        cfg = self.cfg
        version = (self.adapter.version if self.adapter else 0) + 1
        rows = await self._astore("accepted", cfg.learner.accept_threshold, cfg.learner.max_examples)
        examples = []
        for row in rows:
            prompt = await self._astore("prompt", row["prompt_id"])
            spec = CandidateSpec.model_validate_json(row["spec"])
            messages = tuple(prompt["messages"]) if prompt["messages"] else None
            examples.append(self.task.example(Prompt(task=self.task.kind, text=prompt["text"], messages=messages), spec))
        self.accepted_since_update = 0
        out = self.rundir.adapter(version)
        try:
            report = await self.learner.update.remote(examples, str(out), self.adapter.path if self.adapter else None)
        except ray.exceptions.RayActorError as err:
            self.events.append(f"learner lost during update v{version} ({type(err).__name__}); "
                               f"adapter v{self.adapter.version if self.adapter else 0} stays active")
            self.learning = False
            self._maybe_advance()
            return
        adapter = Adapter(name=f"{self.name}-v{version}", version=version, path=report.path)
        await self._astore("add_adapter", version, adapter.name, adapter.path, report.examples, report.loss,
                           report.seconds)
        await self.llm.load_adapter.remote(dataclasses.asdict(adapter))  # warm one replica; others load lazily
        self.events.append(f"adapter v{version} trained: {report.examples} examples, loss {report.loss:.3f}, "
                           f"{report.seconds:.0f} s")
        self.staged = adapter
        self.learning = False
        self._maybe_advance()

    def _maybe_advance(self) -> None:
        """Move to the next cycle once this one generated its quota: with the staged adapter if there is
        one; otherwise, once its candidates are all trained, after a forced update or without one."""
        if not self._quota_done() or self.cycle >= self.cfg.loop.cycles - 1 or self.stopping:
            return
        if self.staged is not None:
            self.adapter, self.staged = self.staged, None
            self._store("activate_adapter", self.adapter.version)
            self._advance_cycle()
            return
        if self.learning or any(c == self.cycle for c in self.pending.values()):
            return
        if self.accepted_since_update > 0:
            self._maybe_learn(force=True)
        else:
            self.events.append(f"cycle {self.cycle} ended without an update (nothing accepted)")
            self._advance_cycle()

    def _advance_cycle(self) -> None:
        self._store("end_cycle", self.cycle)
        self.cycle += 1
        self._store("start_cycle", self.cycle, self.adapter.version if self.adapter else 0)
        self.cycle_advanced.set()

    async def _wait_for_cycle_change(self) -> None:
        self.cycle_advanced.clear()
        start = self.cycle
        while self.cycle == start and not self._budget_spent():
            self._maybe_advance()
            try:
                await asyncio.wait_for(self.cycle_advanced.wait(), timeout=1.0)
            except TimeoutError:
                continue

    def _budget_spent(self) -> bool:
        loop = self.cfg.loop
        if loop.max_candidates is not None and self.generated_total >= loop.max_candidates:
            return True
        return loop.max_minutes is not None and time.monotonic() - self.started >= loop.max_minutes * 60

    def _pool(self) -> list[CorpusEntry]:
        """Prompt material: the best trained candidates of this run first, then the seeds."""
        if not hasattr(self, "_seeds"):
            self._seeds = seed_entries(self.cfg.task.families)
        rows = self._store("best", self.cfg.data.dataset, 16)
        grown = [CorpusEntry(name=r["id"], code=r["code"], accuracy=r["best_accuracy"], dataset=self.cfg.data.dataset)
                 for r in rows if r["best_accuracy"] and r["best_accuracy"] >= self.cfg.learner.accept_threshold]
        return grown + self._seeds

    # ------------------------------------------------------------------ reporting

    async def _tick(self, on_tick) -> None:
        while True:
            on_tick(self.snapshot())
            await asyncio.sleep(1.0)

    def snapshot(self) -> dict[str, Any]:
        return {
            "elapsed": time.monotonic() - self.started, "cycle": self.cycle, "cycles": self.cfg.loop.cycles,
            "adapter": self.adapter.version if self.adapter else 0, "queue": self.queue.qsize(),
            "training": self.training_now, "trainers": len(self.trainers), "learning": self.learning,
            "counts": {k: dataclasses.asdict(v) for k, v in sorted(self.counts.items())},
            "events": self.events[-3:],
        }

    def summary(self) -> dict[str, Any]:
        from nngpt_ray.report import status

        out = status(_StoreProxy(self))
        wall = getattr(self, "wall_seconds", time.monotonic() - self.started)
        out["run"] = {"dir": str(self.rundir.root), "wall_seconds": round(wall, 1),
                      "trainer_busy_fraction": round(self.busy_seconds / (wall * len(self.trainers)), 3) if wall else None,
                      "adapters_applied": sum(1 for a in self._store("adapters") if a["activated"]),
                      "events": self.events}
        return out


def _adapter(row: dict) -> Adapter:
    return Adapter(name=row["name"], version=row["version"], path=row["path"])


def _kill_if_alive(name: str) -> None:
    try:
        stale = ray.get_actor(name)
    except ValueError:
        return
    ray.kill(stale, no_restart=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            ray.get_actor(name)
        except ValueError:
            return
        time.sleep(0.2)


class _StoreProxy:
    """Lets report.status() read through the store actor."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller

    def cycle_stats(self):
        return self.controller._store("cycle_stats")

    def totals(self):
        return self.controller._store("totals")
