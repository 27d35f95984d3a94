"""`code`: NNGPT's few-shot architecture prompting, for real (pretrained) code LLMs.

The prompt gives the dataset, the module contract and the best networks of the corpus with the
accuracy each reached; the model answers with a whole module in a ```python block and its
hyperparameters in a ```json block. One example is the default: NNGPT measured 100% valid with one
example and only 9% with two, as longer prompts overflow small models' context.
"""

from __future__ import annotations

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

    def prompt(self, pool: list[CorpusEntry], rng: random.Random) -> Prompt:
        examples = weighted_pick(pool, rng, max(1, self.examples))
        shown = []
        for i, e in enumerate(examples, 1):
            score = f"accuracy {100 * e.accuracy:.1f}% after {self.epochs} epochs" if e.accuracy else e.description
            hp = json.dumps({k: v for k, v in e.hyperparameters.items() if k != "epochs"})
            shown.append(f"Example {i} ({score}):\n```python\n{e.code.strip()}\n```\n```json\n{hp}\n```")
        user = (f"Write a new PyTorch image classification network for {self.dataset_line()}.\n{CONTRACT_TEXT}\n\n"
                f"Networks from our corpus:\n\n" + "\n\n".join(shown) + "\n\n"
                "Write a different network that you expect to reach a higher accuracy. Answer with exactly one "
                "```python block holding the whole module and one ```json block with its hyperparameters "
                "(lr, momentum, batch and any others the network declares).")
        return Prompt(task=self.kind, parents=tuple(e.name for e in examples),
                      messages=({"role": "system", "content": SYSTEM}, {"role": "user", "content": user}))

    def parse(self, prompt: Prompt, completion: str, origin: Origin) -> CandidateSpec:
        parsed = parse_completion(completion)
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
        return Prompt(task=self.kind, parents=prompt.parents, messages=messages)

    def example(self, prompt: Prompt, spec: CandidateSpec) -> tuple[dict, str]:
        hp = {k: v for k, v in spec.hyperparameters.as_prm().items() if k != "epochs"}
        completion = f"```python\n{spec.code.strip()}\n```\n```json\n{json.dumps(hp)}\n```"
        return {"messages": list(prompt.messages or ())}, completion
