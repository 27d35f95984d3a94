"""`code`: NNGPT's few-shot architecture prompting, for real (pretrained) code LLMs.

The prompt gives the dataset, the module contract and the best networks of the corpus with the
accuracy each reached; the model answers with a whole module in a ```python block and its
hyperparameters in a ```json block. One example is the default: NNGPT measured 100% valid with one
example and only 9% with two, as longer prompts overflow small models' context.
"""

from __future__ import annotations

import functools
import json
import random

from pydantic import ValidationError

from nngpt_ray.contract import CONTRACT_TEXT
from nngpt_ray.corpus import CorpusEntry
from nngpt_ray.failures import FailureKind
from nngpt_ray.parsing import ParseFailure, parse_completion
from nngpt_ray.spec import DEFAULT_HYPERPARAMETERS, CandidateSpec, Origin, Transform
from nngpt_ray.tasks.base import Prompt, Task, weighted_pick

SYSTEM = "You are an expert in neural network design. You write complete, runnable PyTorch modules."


class CodeTask(Task):
    kind = "code"
    blocks: list = []  # NN-RAG blocks to retrieve from (rag.Block), set by use_blocks
    k = 0

    def use_blocks(self, blocks: list, k: int) -> None:
        """Retrieval: every prompt shows `k` of `blocks`, chosen for relevance to its example network and
        novelty against the pool, and asks for a network composed from them."""
        from nngpt_ray.dedup import Deduplicator

        self.blocks, self.k = list(blocks), k
        # the pool's networks recur in every prompt: each code is sketched once
        self._sketch = functools.lru_cache(maxsize=512)(Deduplicator(num_perm=64).sketch)
        self._sketches = [self._sketch(b.code) for b in self.blocks]

    def retrieve(self, examples: list[CorpusEntry], pool: list[CorpusEntry], rng: random.Random) -> list:
        """Score = Jaccard similarity to the examples (relevant material) + (1 - the highest similarity to any
        pool network: what the corpus does not have yet); k drawn from the best 3k."""
        near = [self._sketch(e.code) for e in examples]
        known = [self._sketch(e.code) for e in pool[:24]]
        scored = []
        for block, sketch in zip(self.blocks, self._sketches, strict=True):
            relevance = max(sketch.jaccard(s) for s in near)
            novelty = 1.0 - max((sketch.jaccard(s) for s in known), default=0.0)
            scored.append((relevance + novelty, block.target, block))
        best = [b for _, _, b in sorted(scored, key=lambda x: (-x[0], x[1]))[:3 * self.k]]
        return rng.sample(best, min(self.k, len(best)))

    def prompt(self, pool: list[CorpusEntry], rng: random.Random, examples: list[CorpusEntry] | None = None) -> Prompt:
        """`examples`: show these networks (default: drawn from the pool, front first)."""
        examples = examples or weighted_pick(pool, rng, max(1, self.examples))
        blocks = self.retrieve(examples, pool, rng) if self.blocks else []
        shown = []
        for i, e in enumerate(examples, 1):
            score = f"accuracy {100 * e.accuracy:.1f}% after {self.epochs} epochs" if e.accuracy else e.description
            hp = json.dumps({k: v for k, v in e.hyperparameters.items() if k != "epochs"})
            shown.append(f"Example {i} ({score}):\n```python\n{e.code.strip()}\n```\n```json\n{hp}\n```")
        parts = "".join(f"Building block {i} (from {b.target.split('.')[0]}, standalone):\n```python\n{b.body()}```\n\n"
                        for i, b in enumerate(blocks, 1))
        compose = ("Write a different network, composed from the building blocks above (copy the ones you use into "
                   "your module), that you expect to reach a higher accuracy." if blocks else
                   "Write a different network that you expect to reach a higher accuracy.")
        user = (f"Write a new PyTorch image classification network for {self.dataset_line()}.\n{CONTRACT_TEXT}\n\n"
                f"Networks from our corpus:\n\n" + "\n\n".join(shown) + "\n\n" + parts +
                f"{compose} Answer with exactly one "
                "```python block holding the whole module and one ```json block with its hyperparameters "
                "(lr, momentum, batch and any others the network declares).")
        return Prompt(task=self.kind, parents=tuple(e.name for e in examples),
                      messages=({"role": "system", "content": SYSTEM}, {"role": "user", "content": user}),
                      # sources: the code it shows, whose definitions a completion may use by name
                      context={"blocks": tuple(b.target for b in blocks),
                               "sources": tuple(e.code for e in examples) + tuple(b.code for b in blocks)})

    def parse(self, prompt: Prompt, completion: str, origin: Origin, *, repair: bool = True) -> CandidateSpec:
        """`repair=False`: without the contract near-miss repairs (to measure what they add)."""
        parsed = parse_completion(completion, repair=repair, sources=tuple(prompt.context.get("sources", ())))
        hyperparameters = {"lr": DEFAULT_HYPERPARAMETERS["lr"], "momentum": DEFAULT_HYPERPARAMETERS["momentum"]}
        hyperparameters |= {k: DEFAULT_HYPERPARAMETERS.get(k, 0.0) for k in parsed.declared or ()}
        hyperparameters |= parsed.hyperparameters
        try:
            transform = Transform(**(self.transform.model_dump() | (parsed.transform or {})))
            return self.spec(parsed.code, hyperparameters, origin, transform)
        except (ValidationError, TypeError, ValueError) as err:
            raise ParseFailure(FailureKind.PARSE, f"bad hyperparameters or transform: {err}") from None

    def replay_answer(self, seed: CorpusEntry, seeds: list[CorpusEntry], rng: random.Random) -> CorpusEntry:
        """The prompt asks for a *different* network than its example: replay answers with another seed."""
        others = [s for s in seeds if s.name != seed.name]
        return rng.choice(others) if others else seed

    def reprompt(self, prompt: Prompt, completion: str, diagnostic: str) -> Prompt:
        messages = (*(prompt.messages or ()), {"role": "assistant", "content": completion},
                    {"role": "user", "content": f"Your answer could not be used.\n{diagnostic}\n"
                                                "Answer again: one ```python block with the corrected module and "
                                                "one ```json block with its hyperparameters."})
        return Prompt(task=self.kind, parents=prompt.parents, messages=messages, context=prompt.context)

    def example(self, prompt: Prompt, spec: CandidateSpec) -> tuple[dict, str]:
        hp = {k: v for k, v in spec.hyperparameters.as_prm().items() if k != "epochs"}
        completion = f"```python\n{spec.code.strip()}\n```\n```json\n{json.dumps(hp)}\n```"
        return {"messages": list(prompt.messages or ())}, completion
