"""What every task is: a prompt stage on the shared backbone.

NNGPT's pipelines differ only in how they build the prompt from the corpus, how they read the
answer, and what a good result teaches the model. A `Task` is exactly those three things; the
controller, the LLM deployment and the learner never look inside prompts or completions.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from nngpt_ray.corpus import CorpusEntry
from nngpt_ray.datasets import DatasetInfo
from nngpt_ray.source import short_hash
from nngpt_ray.spec import CandidateSpec, Hyperparameters, Origin, Transform


@dataclass(frozen=True)
class Prompt:
    """One request to the LLM. `messages` (chat) or `text` (raw completion), never both."""

    task: str
    parents: tuple[str, ...] = ()
    text: str | None = None
    messages: tuple[dict[str, str], ...] | None = None
    context: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def id(self) -> str:
        return short_hash(self.task, self.text or "", repr(self.messages))

    def payload(self) -> dict[str, Any]:
        """What travels to the LLM deployment (plain data, no task objects)."""
        return {"text": self.text, "messages": list(self.messages) if self.messages else None}


class Task(ABC):
    kind: str
    stop: tuple[str, ...] = ()

    def __init__(self, dataset: DatasetInfo, epochs: int, transform: Transform, examples: int = 1) -> None:
        self.dataset, self.epochs, self.transform, self.examples = dataset, epochs, transform, examples

    @abstractmethod
    def prompt(self, pool: list[CorpusEntry], rng: random.Random) -> Prompt:
        """A prompt built from the corpus pool (best first)."""

    @abstractmethod
    def parse(self, prompt: Prompt, completion: str, origin: Origin) -> CandidateSpec:
        """The candidate in `completion`. Raises ParseFailure with a diagnostic."""

    @abstractmethod
    def reprompt(self, prompt: Prompt, completion: str, diagnostic: str) -> Prompt:
        """The one retry after a parse failure, carrying the diagnostic."""

    @abstractmethod
    def example(self, prompt: Prompt, spec: CandidateSpec) -> tuple[dict[str, Any], str]:
        """A supervised fine-tuning pair (prompt payload, ideal completion) from a good result."""

    def replay(self, seeds: list[CorpusEntry], rng: random.Random, n: int) -> list[tuple[dict[str, Any], str]]:
        """`n` supervised pairs from the seed corpus, mixed into every update so fine-tuning on the run's own
        results does not narrow the model to them: a prompt built from one seed, answered by
        `replay_answer` (the seed itself, or another one where the task asks for something new)."""
        pairs = []
        for _ in range(n):
            seed = rng.choice(seeds)
            prompt = self.prompt([seed], rng)
            answer = self.replay_answer(seed, seeds, rng)
            spec = self.spec(answer.code, {k: v for k, v in answer.hyperparameters.items() if k != "epochs"},
                             Origin(task=self.kind))
            pairs.append(self.example(prompt, spec))
        return pairs

    def replay_answer(self, seed: CorpusEntry, seeds: list[CorpusEntry], rng: random.Random) -> CorpusEntry:
        return seed

    @staticmethod
    def identity(spec: CandidateSpec) -> str:
        """What dedup compares: the network's code (the `hpo` task adds its hyperparameters)."""
        return spec.code

    def dataset_line(self) -> str:
        d = self.dataset
        side = self.transform.resize
        shape = f"{d.channels}x{side or d.height}x{side or d.width}"
        return f"{d.name}, input {shape}, {d.classes} classes"

    def spec(self, code: str, hyperparameters: dict, origin: Origin, transform: Transform | None = None) -> CandidateSpec:
        return CandidateSpec(code=code, hyperparameters=Hyperparameters(**(hyperparameters | {"epochs": self.epochs})),
                             transform=transform or self.transform, dataset=self.dataset.name, origin=origin)


def weighted_pick(pool: list[CorpusEntry], rng: random.Random, k: int = 1) -> list[CorpusEntry]:
    """k distinct entries, favouring the front of the pool (the pool comes best first)."""
    chosen: list[CorpusEntry] = []
    candidates = list(pool)
    while candidates and len(chosen) < k:
        weights = [1.0 / (1 + 0.15 * i) for i in range(len(candidates))]
        pick = rng.choices(range(len(candidates)), weights=weights)[0]
        chosen.append(candidates.pop(pick))
    return chosen
