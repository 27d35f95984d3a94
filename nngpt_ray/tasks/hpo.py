"""`hpo`: one-shot hyperparameters for a given network (NNGPT's hyperparameter recommendation).

The prompt is the network (in the compact view the fill task uses), the dataset and the names it
supports; the completion is the hyperparameters as one JSON line:

    ### task: hpo
    ### dataset: digits, input 1x8x8, 10 classes
    ### supports: batch, dropout, lr, momentum
    <compact network>
    ### hyperparameters: {"lr": 0.05, "momentum": 0.9, "batch": 32, "dropout": 0.2}
    ### end

The network is not the model's to change, so what makes a candidate new is its code *and* its
hyperparameters and transform (`identity`). What the learner learns from is the best setting found
for each network, from any method's records (`examples_from`).
"""

from __future__ import annotations

import json
import random

from nngpt_ray.corpus import CorpusEntry
from nngpt_ray.failures import FailureKind
from nngpt_ray.parsing import ParseFailure, check_code
from nngpt_ray.spec import DEFAULT_HYPERPARAMETERS, CandidateSpec, Origin
from nngpt_ray.tasks.base import Prompt, Task, weighted_pick
from nngpt_ray.tasks.fill import END, HP, compact

PROMPT_END = f"{HP}"


class HpoTask(Task):
    kind = "hpo"
    stop = (END,)

    def prompt(self, pool: list[CorpusEntry], rng: random.Random) -> Prompt:
        return self.prompt_for(weighted_pick(pool, rng)[0])

    def prompt_for(self, network: CorpusEntry) -> Prompt:
        names = sorted(supported(network.code))
        text = (f"### task: hpo\n### dataset: {self.dataset_line()}\n### supports: {', '.join(names)}\n"
                f"{compact(network.code)}{PROMPT_END}")
        return Prompt(task=self.kind, parents=(network.name,), text=text,
                      context={"code": network.code, "family": network.family})

    def parse(self, prompt: Prompt, completion: str, origin: Origin) -> CandidateSpec:
        line = completion.split(END, 1)[0].strip().splitlines()
        try:
            values = json.loads(line[0]) if line else None
        except ValueError:
            values = None
        if not isinstance(values, dict):
            raise ParseFailure(FailureKind.PARSE, f"the hyperparameters are not one JSON object: {completion[:80]!r}")
        code = prompt.context["code"]
        parsed = check_code(code)
        values.pop("epochs", None)
        hyperparameters = {k: DEFAULT_HYPERPARAMETERS.get(k, 0.0) for k in parsed.declared or ()} | values
        try:
            return self.spec(parsed.code, hyperparameters, origin)
        except ValueError as err:
            raise ParseFailure(FailureKind.PARSE, f"bad hyperparameters: {err}") from None

    def reprompt(self, prompt: Prompt, completion: str, diagnostic: str) -> Prompt:
        return prompt  # a small model cannot read a diagnostic: its retry is a fresh sample

    def example(self, prompt: Prompt, spec: CandidateSpec) -> tuple[dict, str]:
        return prompt.payload(), completion_text(spec.hyperparameters.as_prm())

    @staticmethod
    def identity(spec: CandidateSpec) -> str:
        """What dedup compares: the code with its hyperparameters and transform."""
        prm = {k: v for k, v in spec.hyperparameters.as_prm().items() if k != "epochs"}
        return f"{spec.code}\n# {json.dumps(prm, sort_keys=True)} {spec.transform.model_dump_json()}\n"


def supported(code: str) -> set[str]:
    parsed = check_code(code)
    return {"lr", "momentum", "batch"} | set(parsed.declared or ())


def completion_text(hyperparameters: dict) -> str:
    hp = {k: v for k, v in hyperparameters.items() if k != "epochs"}
    return f" {json.dumps(hp)}\n{END}"


def examples_from(records: list[dict], task: HpoTask, per_network: int = 1) -> list[tuple[dict, str]]:
    """SFT pairs from recorded results (any method's): for each network (by code hash), its best
    `per_network` settings by validation accuracy, trained ones only. `records`: candidate rows."""
    from nngpt_ray import outcomes

    by_network: dict[str, list[dict]] = {}
    for r in records:
        if outcomes.is_trained(r["status"]) and r["best_accuracy"] is not None and r["spec"]:
            by_network.setdefault(r["code_hash"], []).append(r)
    pairs = []
    for rows in by_network.values():
        for r in sorted(rows, key=lambda r: -r["best_accuracy"])[:per_network]:
            spec = CandidateSpec.model_validate_json(r["spec"])
            entry = CorpusEntry(name=r["id"], code=spec.code, accuracy=r["best_accuracy"])
            pairs.append(task.example(task.prompt_for(entry), spec))
    return pairs
