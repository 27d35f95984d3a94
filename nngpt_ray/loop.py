"""The loop's decisions as a pure state machine: no Ray, no I/O, no clock.

The controller tells the `Loop` what happened (a batch of completions was admitted, a candidate
finished, an update succeeded, was rejected or failed) and does what the returned actions say (start
an update, advance to the next cycle with an adapter). It asks the `Loop` how many prompts to send
next. Everything about quotas, cycles, adapters and when to learn lives here and is tested without a
model or a cluster (tests/test_loop_state.py).

A *cycle* is the span in which one adapter version generates: it ends when `per_cycle` new candidates
were sent to training (its last batch may bring a few more; they train too) or `max_generations_per_cycle`
completions were generated. An update starts as soon as `every_k` new accepted results exist, while
generation and training go on; the adapter it makes is *staged* and takes over at the next cycle
boundary, so every cycle is a same-sized sample of one adapter's work. A cycle that ends with no staged
adapter waits for its candidates to finish, then tries one update with whatever was accepted, and
otherwise moves on with the adapter it had.

Where `loop.temperatures` lists several, each batch is sampled at one chosen by Thompson sampling on novel
yield: a fine-tuned adapter that grows sharp and repetitive gets a hotter temperature, one whose fills fall
apart when hot gets a cooler one, as measured in its own cycle. The prompts' material is ordered the same
way, by each seed family's novel yield over the run (`rank_sources`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from nngpt_ray.config import Config
    from nngpt_ray.spec import CandidateSpec
    from nngpt_ray.store import Store

Admission = Literal["invalid", "duplicate", "new"]


@dataclass(frozen=True)
class Budget:
    cycles: int
    per_cycle: int  # new candidates sent to training per cycle
    max_generations_per_cycle: int
    every_k: int  # new accepted results that start an update
    max_candidates: int | None = None  # completions generated, whole run
    max_sent: int | None = None  # candidates sent to training, whole run
    max_learner_failures: int = 3  # consecutive failed updates before learning is turned off
    temperatures: tuple[float, ...] = (1.0,)  # sampling temperatures each batch chooses among

    @classmethod
    def from_config(cls, cfg: Config) -> Budget:
        return cls(cycles=cfg.loop.cycles, per_cycle=cfg.loop.candidates_per_cycle,
                   max_generations_per_cycle=cfg.loop.max_generations_per_cycle, every_k=cfg.learner.every_k,
                   max_candidates=cfg.loop.max_candidates, max_sent=cfg.loop.max_sent,
                   max_learner_failures=cfg.learner.max_failures,
                   temperatures=tuple(cfg.loop.temperatures or [cfg.llm.temperature]))


@dataclass(frozen=True)
class Batch:
    """A generation request the controller may send: `size` prompts for `cycle` with `adapter`.
    `index` counts the completions generated before it in the whole run (it seeds the random streams,
    so a resumed run continues them instead of replaying the first prompts)."""

    cycle: int
    adapter: int
    size: int
    index: int
    temperature: float = 1.0


@dataclass(frozen=True)
class Learn:
    version: int  # the adapter version the update makes
    forced: bool  # a cycle boundary asked for it with fewer than every_k accepted results


@dataclass(frozen=True)
class Advance:
    ended: int
    started: int
    adapter: int  # active in the new cycle; new if it was staged
    activated: bool  # the adapter was switched in at this boundary


@dataclass(frozen=True)
class Note:
    text: str


Action = Learn | Advance | Note


@dataclass
class CycleCounts:
    generated: int = 0
    sent: int = 0  # new candidates sent to training (the quota counts these)
    in_flight: int = 0  # prompts sent, completions not back yet


@dataclass
class Arm:
    """What the completions sampled one way (at one temperature in one cycle, from one seed family's
    prompts) gave: how many, and how many of them were new networks."""

    generated: int = 0
    new: int = 0

    def draw(self, rng: random.Random, earlier: Arm | None = None) -> float:
        """A Thompson draw of the novel yield, Beta(1 + new, 1 + the rest), with `earlier` at half weight."""
        e = earlier or Arm()
        return rng.betavariate(1 + self.new + e.new / 2, 1 + (self.generated - self.new) + (e.generated - e.new) / 2)


@dataclass
class Loop:
    budget: Budget
    cycle: int = 0
    adapter: int = 0
    staged: int | None = None
    next_version: int = 1
    accepted_since_update: int = 0
    generated_total: int = 0
    learning: int | None = None  # version of the update in progress
    counts: dict[int, CycleCounts] = field(default_factory=dict)
    pending: dict[str, int] = field(default_factory=dict)  # candidate id -> cycle, sent and not finished
    stopping: bool = False
    learning_off: bool = False
    learner_failures: int = 0
    tried_at: int | None = None  # cycle whose boundary already tried (and failed) to make an update
    arms: dict[tuple[int, float], Arm] = field(default_factory=dict)  # (cycle, temperature) -> its record
    sampled_at: dict[str, tuple[int, float, str | None]] = field(default_factory=dict)  # id -> (cycle,
    # temperature, source) it was sampled with, until it is back
    sources: dict[str, Arm] = field(default_factory=dict)  # seed family of the prompt -> its record, whole run
    seed: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(f"{self.seed}:sampling")  # temperatures and prompt sources

    @classmethod
    def restore(cls, budget: Budget, store: Store, accept_threshold: float,
                seed: int = 0) -> tuple[Loop, list[CandidateSpec]]:
        """Where a run stands, read from its store: the loop state and the candidates to train (again).
        Reads only; the store already has cycle 0 and no open attempts (the driver saw to both). The
        records of temperatures and prompt sources start afresh (a resumed run explores again)."""
        loop = cls(budget, seed=seed)
        cycles = store.cycles()
        if cycles:
            loop.cycle, loop.adapter = cycles[-1]["cycle"], cycles[-1]["adapter"]
        adapters = store.adapters()
        loop.next_version = max((a["version"] for a in adapters), default=0) + 1
        staged = [a["version"] for a in adapters if a["status"] == "staged" and a["activated"] is None
                  and a["version"] > loop.adapter and Path(a["path"]).is_dir()]
        loop.staged = staged[-1] if staged else None  # trained before the driver died, not yet switched in
        for row in store.cycle_stats():
            loop.counts[row["cycle"]] = CycleCounts(generated=int(row["generated"] or 0), sent=int(row["queued"] or 0))
        loop.generated_total = sum(c.generated for c in loop.counts.values())
        loop.rng = random.Random(f"{seed}:sampling:{loop.generated_total}")  # continues, not replays
        unfinished = store.unfinished()
        loop.pending = {spec.id: spec.origin.cycle or 0 for spec in unfinished}
        loop.accepted_since_update = store.accepted_since(accept_threshold,
                                                          max((a["created"] for a in adapters), default=0.0))
        return loop, unfinished

    # ------------------------------------------------------------------ queries

    @property
    def last_cycle(self) -> int:
        return self.budget.cycles - 1

    def current(self) -> CycleCounts:
        return self.counts.setdefault(self.cycle, CycleCounts())

    def quota_done(self, cycle: int | None = None) -> bool:
        c = self.counts.get(self.cycle if cycle is None else cycle, CycleCounts())
        return c.sent >= self.budget.per_cycle or c.generated >= self.budget.max_generations_per_cycle

    @property
    def in_flight(self) -> int:
        return sum(c.in_flight for c in self.counts.values())

    @property
    def sent_total(self) -> int:
        return sum(c.sent for c in self.counts.values())

    @property
    def budget_spent(self) -> bool:
        b = self.budget
        return ((b.max_candidates is not None and self.generated_total + self.in_flight >= b.max_candidates)
                or (b.max_sent is not None and self.sent_total + self.in_flight >= b.max_sent))

    @property
    def generation_over(self) -> bool:
        """No batch will ever be issued again."""
        return self.stopping or self.budget_spent or (self.cycle >= self.last_cycle and self.quota_done())

    @property
    def finished(self) -> bool:
        """Generation is over and every completion and candidate sent to training has come back."""
        return self.generation_over and self.in_flight == 0 and not self.pending

    def can_generate(self) -> bool:
        """A batch could be issued now (no side effects)."""
        return self._room(1) > 0

    def next_batch(self, size: int) -> Batch | None:
        """The next generation request, or None while generation must wait (quota reached, an update or
        the cycle's candidates pending) or is over."""
        room = self._room(size)
        if room <= 0:
            return None
        batch = Batch(self.cycle, self.adapter, room, self.generated_total + self.in_flight, self._temperature())
        self.current().in_flight += room
        return batch

    def _room(self, size: int) -> int:
        if self.generation_over or self.quota_done():
            return 0
        c, b = self.current(), self.budget
        open_quota = b.per_cycle - c.sent - c.in_flight  # as if every prompt in flight came back new
        if open_quota <= 0 and c.in_flight:
            return 0  # what is in flight may fill the quota: wait for it
        room = min(size, b.max_generations_per_cycle - c.generated - c.in_flight, self._prompts_for(open_quota))
        if b.max_candidates is not None:
            room = min(room, b.max_candidates - self.generated_total - self.in_flight)
        if b.max_sent is not None:  # a batch never asks for more than could still be sent: no overshoot
            room = min(room, b.max_sent - self.sent_total - self.in_flight)
        return room

    def _prompts_for(self, quota: int) -> int:
        """The prompts that should bring `quota` new candidates: the quota over the share of completions that
        came back new in this cycle and the one before (Laplace-smoothed: 1/2 before anything is known). A
        model that repeats itself is asked a few full batches, not a long tail of one-prompt requests that
        cost nearly as much each (measured on the tiny test model: 129 prompts in 45 requests, 102 s). The
        last batch of a cycle may bring more new candidates than its quota: they all train, in that cycle."""
        seen = [self.counts.get(cycle, CycleCounts()) for cycle in (self.cycle, self.cycle - 1)]
        new, generated = sum(c.sent for c in seen) + 1, sum(c.generated for c in seen) + 2
        return max(1, -(-quota * generated // new))  # ceil(quota / (new / generated))

    def temperature_record(self, cycle: int) -> str:
        """What each temperature gave in `cycle`, e.g. "0.4: 3/10, 0.6: 5/21"."""
        return ", ".join(f"{t:g}: {a.new}/{a.generated}" for (c, t), a in sorted(self.arms.items()) if c == cycle)

    def _temperature(self) -> float:
        """Thompson sampling over the configured temperatures, on novel yield (a completion is a success
        when it is sent to training as a new candidate and, once back, was a working network). The current
        cycle's record counts fully and the previous cycle's at half weight, so each adapter is measured as
        it samples and a cycle does not start from nothing. One temperature: that one, always."""
        arms = self.budget.temperatures
        if len(arms) == 1:
            return arms[0]
        draws = {t: self.arms.get((self.cycle, t), Arm()).draw(self.rng, self.arms.get((self.cycle - 1, t)))
                 for t in arms}
        return max(draws, key=draws.__getitem__)

    # ------------------------------------------------------------------ events

    def start(self) -> list[Action]:
        """What the state calls for before any event: a restored run may stand exactly where a driver died
        (a quota met and every candidate back, an update owed), and no event would come to say so."""
        return self._maybe_learn() + self._advance()

    def admitted(self, batch: Batch, kinds: list[Admission], new_ids: list[str],
                 sources: list[str] | None = None) -> list[Action]:
        """The completions of `batch` were parsed and deduplicated; `new_ids` (in the order of the "new"
        kinds) were sent to training. `sources`: per completion, the seed family its prompt came from."""
        c = self.counts.setdefault(batch.cycle, CycleCounts())
        c.in_flight -= batch.size
        c.generated += len(kinds)
        self.generated_total += len(kinds)
        c.sent += len(new_ids)
        arm = self.arms.setdefault((batch.cycle, batch.temperature), Arm())
        arm.generated += len(kinds)
        arm.new += len(new_ids)
        new_sources = iter([])
        if sources is not None:
            for kind, source in zip(kinds, sources, strict=True):
                self.sources.setdefault(source, Arm()).generated += 1
                self.sources[source].new += kind == "new"
            new_sources = iter([src for kind, src in zip(kinds, sources, strict=True) if kind == "new"])
        for cid in new_ids:
            self.pending[cid] = batch.cycle
            self.sampled_at[cid] = (batch.cycle, batch.temperature, next(new_sources, None))
        return self._advance()

    def rank_sources(self, names: list[str]) -> list[str]:
        """The distinct `names` (seed families prompts come from), ordered by a Thompson draw on each one's
        novel yield over the run: prompts that keep giving back networks dedup already knows move to the
        back, untried and inventive ones to the front. Without this, the pool's best-first order put the
        families with the most accurate networks in front, and their prompts were sampled until nearly
        every completion was a duplicate (measured: 15 of 25 in a last cycle)."""
        draws = {name: self.sources.get(name, Arm()).draw(self.rng) for name in dict.fromkeys(names)}
        return sorted(draws, key=draws.__getitem__, reverse=True)

    def batch_lost(self, batch: Batch) -> None:
        """A request was cancelled or failed: its prompts were never generated."""
        self.counts[batch.cycle].in_flight -= batch.size

    def finished_candidate(self, candidate_id: str, accepted: bool, valid: bool = True) -> list[Action]:
        """A candidate sent to training has its final result (trained, stopped or failed). One that could
        not be built or run (`valid` False) no longer counts as new for the temperature it was sampled at."""
        if self.pending.pop(candidate_id, None) is None:
            return []
        sampled = self.sampled_at.pop(candidate_id, None)
        if sampled is not None and not valid:
            cycle, temperature, source = sampled
            self.arms[(cycle, temperature)].new -= 1
            if source is not None:
                self.sources[source].new -= 1
        if accepted:
            self.accepted_since_update += 1
        return self._maybe_learn() + self._advance()

    def adapter_ready(self, version: int) -> list[Action]:
        """The update made `version` and the gate let it through: it is staged for the next cycle."""
        self.learning, self.staged, self.learner_failures = None, version, 0
        return self._advance()

    def adapter_rejected(self, version: int, reason: str) -> list[Action]:
        """The gate refused `version`: the active adapter stays."""
        self.learning, self.tried_at, self.learner_failures = None, self.cycle, 0
        return [Note(f"adapter v{version} rejected: {reason}; v{self.adapter} stays active"), *self._advance()]

    def update_failed(self, version: int, reason: str) -> list[Action]:
        """The update making `version` failed (an error, a diverged loss, a lost learner)."""
        self.learning, self.tried_at = None, self.cycle
        self.learner_failures += 1
        notes = [Note(f"update v{version} failed: {reason}; v{self.adapter} stays active")]
        if self.learner_failures >= self.budget.max_learner_failures:
            self.learning_off = True
            notes.append(Note(f"learning turned off after {self.learner_failures} failed updates in a row"))
        return notes + self._advance()

    def stop(self) -> None:
        """Generate no more (deadline, budget, interrupt); candidates in training may still finish."""
        self.stopping = True

    def withdraw(self, candidate_id: str) -> None:
        """A candidate sent to training will not be trained in this run (it stays queued for a resume)."""
        self.pending.pop(candidate_id, None)
        self.sampled_at.pop(candidate_id, None)

    # ------------------------------------------------------------------ rules

    def _can_learn(self) -> bool:
        return (self.learning is None and self.staged is None and not self.learning_off and not self.stopping
                and self.cycle < self.last_cycle)

    def _maybe_learn(self) -> list[Action]:
        if not self._can_learn() or self.accepted_since_update < self.budget.every_k:
            return []
        return [self._learn(forced=False)]

    def _learn(self, forced: bool) -> Learn:
        self.learning, self.next_version = self.next_version, self.next_version + 1
        self.accepted_since_update = 0
        return Learn(self.learning, forced)

    def _advance(self) -> list[Action]:
        """Move to the next cycle once this one met its quota: with the staged adapter if there is one;
        otherwise, once its candidates are all back, after one forced update or without one."""
        if not self.quota_done() or self.cycle >= self.last_cycle or self.stopping:
            return []
        if self.staged is not None:
            adapter, self.staged = self.staged, None
            return [self._next_cycle(adapter, activated=True)]
        if self.learning is not None or self.cycle in self.pending.values():
            return []
        if self.accepted_since_update > 0 and self._can_learn() and self.tried_at != self.cycle:
            return [self._learn(forced=True)]
        note = Note(f"cycle {self.cycle} ended without an update (no new result reached learner.accept_threshold)"
                    if self.tried_at != self.cycle and not self.learning_off else
                    f"cycle {self.cycle} ended without a new adapter")
        return [note, self._next_cycle(self.adapter, activated=False)]

    def _next_cycle(self, adapter: int, activated: bool) -> Advance:
        ended = self.cycle
        self.cycle, self.adapter = ended + 1, adapter
        self.counts.setdefault(self.cycle, CycleCounts())
        return Advance(ended, self.cycle, adapter, activated)
